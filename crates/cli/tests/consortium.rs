//! Consortia through three `concord node` processes: a 2-of-3 FROST key
//! generation without a dealer (every member gets the same group key), a
//! query whose result the consortium signs, the result file checked offline
//! by `concord verify` (and refused when the answer, an envelope or the plan
//! is forged, or under another consortium's key), and consortia refused when
//! a member is unknown or down.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::nodes::{http, init_node, pair_all, query, sessions, start, wait_all_up, wait_until, Node};
use common::{concord, fails, ok, TempDir};

use serde_json::Value as J;

const SCHEMA: &str = "table = \"patients\"\nmax_rows = 100000\n\n[[column]]\nname = \"age\"\ntype = \"int\"\nmin = 0\nmax = 120\n\n[[column]]\nname = \"sex\"\ntype = \"category\"\nvalues = [\"F\", \"M\"]\n";

fn consortia(api: &str) -> Vec<J> {
    http(api, "GET", "/api/consortia", "").1["consortia"].as_array().unwrap().clone()
}

fn find<'a>(list: &'a [J], name: &str) -> &'a J {
    list.iter().find(|c| c["name"] == name).unwrap_or_else(|| panic!("no consortium {name}: {list:?}"))
}

/// `concord verify FILE --group-key KEY`: (success, stdout + stderr).
fn verify(file: &str, key: &str) -> (bool, String) {
    let out = concord(&["verify", file, "--group-key", key]);
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

/// Write a copy of the result file `from` changed by `f` to `to`.
fn forge(from: &str, to: &str, f: impl FnOnce(&mut J)) {
    let mut v: J = serde_json::from_str(&std::fs::read_to_string(from).unwrap()).unwrap();
    f(&mut v);
    std::fs::write(to, serde_json::to_string_pretty(&v).unwrap()).unwrap();
}

#[test]
fn consortium_signs_results_that_verify_offline() {
    let root = TempDir::new("consortium");
    std::fs::write(root.0.join("schema.toml"), SCHEMA).unwrap();
    let names = ["hospital-a", "hospital-b", "hospital-c"];
    let mut dirs = Vec::new();
    let mut apis = Vec::new();
    let mut total = 0usize;
    for (p, name) in names.iter().enumerate() {
        let n = 40 + 10 * p;
        total += n;
        let csv: String = std::iter::once("age,sex\n".to_owned())
            .chain((0..n).map(|i| format!("{},{}\n", 20 + (i * 7 + p * 13) % 60, if i % 3 == 0 { "F" } else { "M" })))
            .collect();
        let file = root.join(&format!("party{p}.csv"));
        std::fs::write(&file, csv).unwrap();
        let dir = root.join(name);
        let api = init_node(&dir, name, |c| c);
        let schema = root.join("schema.toml");
        ok(&concord(&["dataset", "add", "patients", "--file", &file, "--schema", &schema, "--dir", &dir]));
        dirs.push(dir);
        apis.push(api);
    }
    let mut nodes: Vec<Option<Node>> = (0..3).map(|i| Some(start(&dirs[i], &apis[i], &[]))).collect();
    pair_all(&dirs);
    wait_all_up(&apis);
    let node_a = format!("http://{}", apis[0]);

    // An unknown member is refused, named, before anything is stored.
    let err = fails(&concord(&[
        "consortium",
        "create",
        "bad",
        "--members",
        "hospital-a,hospital-b,nobody",
        "--threshold",
        "2",
        "--node",
        &node_a,
    ]));
    assert!(err.contains("\"nobody\"") && err.contains("not a paired peer"), "{err}");
    assert!(consortia(&apis[0]).is_empty());

    // A 2-of-3 consortium: every member ends active with the same group key.
    let out = ok(&concord(&[
        "consortium",
        "create",
        "research",
        "--members",
        &names.join(","),
        "--threshold",
        "2",
        "--node",
        &node_a,
    ]));
    assert!(out.contains("is active"), "{out}");
    eprintln!("{out}");
    let key = find(&consortia(&apis[0]), "research")["group_key"].as_str().unwrap().to_owned();
    assert!(key.starts_with("concord-group-v1:"), "{key}");
    for api in &apis {
        let list = consortia(api);
        let c = find(&list, "research");
        assert_eq!(
            (c["state"].as_str(), c["group_key"].as_str(), c["threshold"].as_u64()),
            (Some("active"), Some(key.as_str()), Some(2))
        );
        assert_eq!(c["members"], serde_json::json!(names));
        let text = serde_json::to_string(&list).unwrap();
        assert!(!text.contains("signing_share") && !text.contains("secret"), "{text}");
    }
    let (_, api_doc) = http(&apis[0], "GET", "/openapi.json", "");
    assert!(api_doc["paths"]["/api/consortia"]["post"].is_object(), "{api_doc}");
    let listed = ok(&concord(&["consortium", "list", "--node", &node_a]));
    assert!(listed.contains("research") && listed.contains("active") && listed.contains(&key), "{listed}");
    // The same name again is refused.
    let err = fails(&concord(&[
        "consortium",
        "create",
        "research",
        "--members",
        "hospital-a,hospital-b",
        "--threshold",
        "2",
        "--node",
        &node_a,
    ]));
    assert!(err.contains("exists already"), "{err}");
    // A second consortium (a and b only): another group key.
    ok(&concord(&[
        "consortium",
        "create",
        "pair",
        "--members",
        "hospital-a,hospital-b",
        "--threshold",
        "2",
        "--node",
        &node_a,
    ]));
    let other_key = find(&consortia(&apis[1]), "pair")["group_key"].as_str().unwrap().to_owned();
    assert_ne!(other_key, key);

    // A query signed by the consortium, with its result file.
    let parties = names.join(",");
    let file = root.join("result.json");
    let sql = "SELECT COUNT(*), AVG(age) FROM patients";
    let out = ok(&query(&apis[0], sql, &parties, &["--consortium", "research", "--result-file", &file]));
    let v: J = serde_json::from_str(&out).unwrap();
    assert_eq!(v["rows"][0][0].as_f64().unwrap(), total as f64, "{out}");
    let session = &sessions(&apis[0])[0];
    let att = &session["attestation"];
    assert_eq!(
        (att["consortium"].as_str(), att["group_key"].as_str()),
        (Some("research"), Some(key.as_str())),
        "{session}"
    );
    assert_eq!(att["signature"].as_str().unwrap().len(), 128);
    assert_eq!(att["signers"].as_array().unwrap().len(), 2);
    let doc: J = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    assert_eq!(doc["answer"]["rows"], v["rows"]);
    assert_eq!(doc["envelopes"].as_array().unwrap().len(), 3);

    // The coordinator logs how long signing took.
    let log = std::fs::read_to_string(format!("{}.log", dirs[0])).unwrap();
    let signed = log.lines().find(|l| l.contains("result signed by the consortium")).expect("no signing in the log");
    eprintln!("{signed}");

    // Offline verification: OK.
    let (good, text) = verify(&file, &key);
    assert!(good && text.contains("OK: the answer is what the signed shares"), "{text}");

    // A forged answer.
    let forged = root.join("forged-answer.json");
    forge(&file, &forged, |d| d["answer"]["rows"][0][0] = serde_json::json!(total + 1));
    let (good, text) = verify(&forged, &key);
    assert!(!good && text.contains("answer: FAILED") && text.contains("not the one the signed shares give"), "{text}");
    assert!(text.contains(&format!("is {} in the file, {total} from the shares", total + 1)), "{text}");
    assert!(text.contains("signature: OK"), "{text}");

    // A changed envelope.
    let forged = root.join("forged-envelope.json");
    forge(&file, &forged, |d| {
        let c = d["envelopes"][1]["ciphertext"].as_str().unwrap().to_owned();
        let flipped = if c.starts_with('0') { "1" } else { "0" };
        d["envelopes"][1]["ciphertext"] = J::String(format!("{flipped}{}", &c[1..]));
    });
    let (good, text) = verify(&forged, &key);
    assert!(!good && text.contains("envelopes: FAILED") && text.contains("an envelope was changed"), "{text}");
    assert!(text.contains("signature: FAILED") && text.contains("the envelope of party 1 (hospital-b)"), "{text}");

    // A changed plan.
    let forged = root.join("forged-plan.json");
    forge(&file, &forged, |d| {
        d["plan"]["created_at"] = serde_json::json!(d["plan"]["created_at"].as_i64().unwrap() + 1)
    });
    let (good, text) = verify(&forged, &key);
    assert!(!good && text.contains("plan: FAILED") && text.contains("the plan was changed"), "{text}");
    assert!(text.contains("signature: FAILED"), "{text}");

    // Another consortium's group key.
    let (good, text) = verify(&file, &other_key);
    assert!(!good && text.contains("signature: FAILED") && text.contains("does not verify under group key"), "{text}");
    assert!(text.contains("another consortium's"), "{text}");

    // A session naming a consortium that does not exist is refused.
    let err = fails(&query(&apis[0], sql, &parties, &["--consortium", "nope"]));
    assert!(err.contains("no consortium named \"nope\""), "{err}");

    // A member that is down: refused, named.
    nodes[2].take();
    wait_until("hospital-c down", 30, || common::nodes::health(&apis[0], "hospital-c") == "down");
    let err = fails(&concord(&[
        "consortium",
        "create",
        "late",
        "--members",
        &parties,
        "--threshold",
        "2",
        "--node",
        &node_a,
    ]));
    assert!(err.contains("\"hospital-c\"") && err.contains("is not up"), "{err}");
    // The consortia survive in the store (read without the API).
    let listed = ok(&concord(&["consortium", "list", "--dir", &dirs[2]]));
    assert!(listed.contains("research") && listed.contains(&key), "{listed}");
}
