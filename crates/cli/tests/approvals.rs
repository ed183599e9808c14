//! k-of-n data-owner approval through three `concord node` processes whose
//! policies each require 2 of the 3 hospitals to approve alice's queries:
//! refused while no consortium of exactly those owners exists; then, with a
//! 2-of-3 consortium, the session waits for the owners, runs once two
//! approve (the third never answers), every node holds the same verified
//! FROST signature over the request's hash, and the result file verifies
//! offline (`concord verify`), approval included; forging the answer or the
//! approval makes verification fail. One approval of two needed fails the
//! session in time, naming who approved; a rejection ends it everywhere.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::nodes::{http, init_node, pair_all, query, sessions, start, wait_all_up, wait_until, Node};
use common::{concord, fails, ok, TempDir};

use serde_json::Value as J;

const SCHEMA: &str = "table = \"patients\"\nmax_rows = 100000\n\n[[column]]\nname = \"age\"\ntype = \"int\"\nmin = 0\nmax = 120\n\n[[column]]\nname = \"sex\"\ntype = \"category\"\nvalues = [\"F\", \"M\"]\n";

const POLICY: &str = r#"
[[rule]]
name = "two-owners-approve"
analysts = ["alice"]
datasets = ["patients"]
columns = ["*"]
functions = ["*"]
where_columns = ["*"]
group_by_columns = ["*"]
approvals = { k = 2, of = ["hospital-a", "hospital-b", "hospital-c"] }
"#;

fn approvals(api: &str) -> Vec<J> {
    http(api, "GET", "/api/approvals", "").1["approvals"].as_array().cloned().unwrap_or_default()
}

fn session(api: &str, id: &str) -> J {
    http(api, "GET", &format!("/api/sessions/{id}"), "").1
}

/// `concord verify`: (success, stdout + stderr).
fn verify(file: &str, key: &str) -> (bool, String) {
    let out = concord(&["verify", file, "--group-key", key]);
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

#[test]
fn two_of_three_data_owners_approve_with_one_threshold_signature() {
    let root = TempDir::new("approvals");
    std::fs::write(root.0.join("schema.toml"), SCHEMA).unwrap();
    let names = ["hospital-a", "hospital-b", "hospital-c"];
    let (mut dirs, mut apis) = (Vec::new(), Vec::new());
    let mut ages = Vec::new();
    for (p, name) in names.iter().enumerate() {
        let rows: Vec<(i64, &str)> = (0..50 + 10 * p)
            .map(|i| (20 + ((i * 7 + p * 13) % 60) as i64, if i % 3 == 0 { "F" } else { "M" }))
            .collect();
        let csv: String =
            std::iter::once("age,sex\n".to_owned()).chain(rows.iter().map(|(a, s)| format!("{a},{s}\n"))).collect();
        ages.extend(rows.iter().map(|r| r.0));
        let file = root.join(&format!("party{p}.csv"));
        std::fs::write(&file, csv).unwrap();
        let dir = root.join(name);
        let api = init_node(&dir, name, |c| {
            c.replace("# policy = \"policy.toml\"", "policy = \"policy.toml\"")
                .replace("approval_timeout_secs = 86400", "approval_timeout_secs = 20")
        });
        assert!(std::fs::read_to_string(format!("{dir}/concord.toml")).unwrap().contains("approval_timeout_secs = 20"));
        std::fs::write(format!("{dir}/policy.toml"), POLICY).unwrap();
        let schema = root.join("schema.toml");
        ok(&concord(&["dataset", "add", "patients", "--file", &file, "--schema", &schema, "--dir", &dir]));
        dirs.push(dir);
        apis.push(api);
    }
    let key = root.join("alice.key");
    let public = ok(&concord(&["analyst", "new", "--out", &key]));
    for dir in &dirs {
        ok(&concord(&["analyst", "add", "alice", public.trim(), "--role", "researcher", "--dir", dir]));
    }
    let _nodes: Vec<Node> = (0..3).map(|i| start(&dirs[i], &apis[i], &[])).collect();
    pair_all(&dirs);
    wait_all_up(&apis);
    let parties = names.join(",");
    let node = |i: usize| format!("http://{}", apis[i]);
    let alice = ["--analyst", "alice", "--key", key.as_str()];
    let sql = "SELECT COUNT(*), SUM(age) FROM patients";

    // No consortium of the three owners yet: refused at once, saying what to do.
    let err = fails(&query(&apis[0], sql, &parties, &alice));
    assert!(
        err.contains("approvals_required")
            && err.contains("two-owners-approve")
            && err.contains("concord consortium create NAME --members hospital-a,hospital-b,hospital-c --threshold 2"),
        "{err}"
    );
    // A consortium of the right owners but another threshold does not do either.
    let created = ok(&concord(&[
        "consortium",
        "create",
        "all-three",
        "--members",
        &parties,
        "--threshold",
        "3",
        "--node",
        &node(0),
    ]));
    assert!(created.contains("is active"), "{created}");
    let err = fails(&query(&apis[0], sql, &parties, &alice));
    assert!(err.contains("approvals_required"), "{err}");
    let created = ok(&concord(&[
        "consortium",
        "create",
        "owners",
        "--members",
        &parties,
        "--threshold",
        "2",
        "--node",
        &node(1),
    ]));
    let group_key = created.lines().find_map(|l| l.strip_prefix("group key ")).unwrap().trim().to_owned();

    // The query waits for the owners; every one of them is asked, with the plan in words.
    let file = root.join("result.json");
    let (api0, parties0, key0, file0) = (apis[0].clone(), parties.clone(), key.clone(), file.clone());
    let waiting = std::thread::spawn(move || {
        let extra = ["--analyst", "alice", "--key", &key0, "--consortium", "owners", "--result-file", &file0];
        query(&api0, "SELECT COUNT(*), SUM(age) FROM patients", &parties0, &extra)
    });
    wait_until("an approval request on every owner", 30, || apis.iter().all(|a| approvals(a).len() == 1));
    let id = approvals(&apis[2])[0]["id"].as_str().unwrap().to_owned();
    for api in &apis {
        let pending = &approvals(api)[0];
        assert_eq!(pending["id"], id.as_str());
        assert_eq!(pending["approval_consortium"], "owners");
        let words = pending["description"].to_string();
        assert!(words.contains("once 2 of the data owners hospital-a, hospital-b, hospital-c approve"), "{words}");
    }
    // One approval is not enough: the session still waits.
    ok(&concord(&["approvals", "approve", &id, "--node", &node(0), "--by", "dr-a"]));
    std::thread::sleep(std::time::Duration::from_millis(1500));
    assert_eq!(session(&apis[0], &id)["state"], "pending", "{}", session(&apis[0], &id));
    // The second runs it; hospital-c's operator never answered.
    ok(&concord(&["approvals", "approve", &id, "--node", &node(2), "--by", "dr-c"]));
    let out = ok(&waiting.join().unwrap());
    let v: J = serde_json::from_str(&out).unwrap();
    assert_eq!(v["rows"][0][0].as_i64().unwrap(), ages.len() as i64, "{out}");
    assert_eq!(v["rows"][0][1].as_i64().unwrap(), ages.iter().sum::<i64>(), "{out}");

    let log = std::fs::read_to_string(format!("{}.log", dirs[0])).unwrap();
    let signed_in = log.lines().find(|l| l.contains("threshold approval signed")).unwrap_or_default();
    eprintln!("coordinator: {signed_in}");
    assert!(signed_in.contains(" ms=") && !signed_in.contains('\x1b'), "plain text in a log file: {signed_in}");

    // Every node holds the same approval, verified under its own record of the group key.
    let approval = session(&apis[0], &id)["approval"].clone();
    assert_eq!(approval["consortium"], "owners");
    assert_eq!(approval["group_key"], group_key.as_str());
    assert_eq!(approval["signers"], serde_json::json!(["hospital-a", "hospital-c"]));
    let signed: J = session(&apis[0], &id)["plan"]["request"].clone();
    assert_eq!(approval["request_hash"].as_str().unwrap().len(), 64);
    assert!(!signed.is_null());
    for api in &apis[1..] {
        assert_eq!(session(api, &id)["approval"], approval, "{api}");
        assert_eq!(session(api, &id)["state"], "done");
    }
    let b_own = session(&apis[1], &id)["progress"].to_string();
    assert!(b_own.contains("approval not needed (k data owners approved)"), "{b_own}");
    let (_, doc) = http(&apis[0], "GET", "/openapi.json", "");
    assert!(doc["components"]["schemas"]["Session"]["properties"]["approval"]["properties"]["signers"].is_object());
    // ... and says so in its audit trail.
    for api in &apis {
        let (_, page) = common::get(api, "/");
        assert!(page.contains("approval.threshold"), "{api}: {page}");
    }
    let (_, page) = common::get(&apis[0], "/");
    assert!(page.contains("approval.signed") && page.contains("approval.granted"), "{page}");
    let (_, page) = common::get(&apis[1], "/");
    assert!(!page.contains("approval.signed"), "b did not approve, so it did not sign: {page}");

    // The result file verifies offline, the owners' approval included.
    let (good, text) = verify(&file, &group_key);
    assert!(good, "{text}");
    assert!(
        text.contains("approval: OK")
            && text.contains("approved by 2 of consortium \"owners\" (hospital-a, hospital-c)"),
        "{text}"
    );
    // Forged answer: fails.
    let forge = |name: &str, f: &dyn Fn(&mut J)| -> String {
        let mut doc: J = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
        f(&mut doc);
        let path = root.join(name);
        std::fs::write(&path, serde_json::to_string_pretty(&doc).unwrap()).unwrap();
        path
    };
    let forged = forge("forged-answer.json", &|d| d["answer"]["rows"][0][0] = J::from(ages.len() + 1));
    let (good, text) = verify(&forged, &group_key);
    assert!(!good && text.contains("answer: FAILED"), "{text}");
    // Forged approval: another signer list is fine (informational), another signature is not.
    let forged = forge("forged-approval.json", &|d| {
        let s = d["approval"]["signature"].as_str().unwrap().to_owned();
        let last = if s.ends_with('0') { "1" } else { "0" };
        d["approval"]["signature"] = J::from(format!("{}{last}", &s[..s.len() - 1]));
    });
    let (good, text) = verify(&forged, &group_key);
    assert!(!good && text.contains("approval: FAILED"), "{text}");
    // Under another consortium's key (the 3-of-3 one), neither the result nor the approval verifies.
    let other = http(&apis[0], "GET", "/api/consortia", "").1["consortia"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "all-three")
        .unwrap()["group_key"]
        .as_str()
        .unwrap()
        .to_owned();
    let (good, text) = verify(&file, &other);
    assert!(!good && text.contains("signature: FAILED") && text.contains("approval: FAILED"), "{text}");

    // One approval of the two needed: the session fails in time, naming who approved.
    let (api0, parties0, key0) = (apis[0].clone(), parties.clone(), key.clone());
    let waiting = std::thread::spawn(move || {
        query(&api0, "SELECT AVG(age) FROM patients", &parties0, &["--analyst", "alice", "--key", &key0])
    });
    wait_until("the second request on b", 30, || approvals(&apis[1]).len() == 1);
    let id2 = approvals(&apis[1])[0]["id"].as_str().unwrap().to_owned();
    ok(&concord(&["approvals", "approve", &id2, "--node", &node(1), "--by", "dr-b"]));
    let err = fails(&waiting.join().unwrap());
    assert!(err.contains("only 1 of the 2 data-owner approvals") && err.contains("hospital-b"), "{err}");
    wait_until("the failure everywhere", 10, || apis.iter().all(|a| session(a, &id2)["state"] == "failed"));
    for api in &apis {
        assert!(session(api, &id2)["approval"].is_null());
        assert!(session(api, &id2)["results"].as_array().is_none_or(Vec::is_empty));
    }

    // A rejection by one owner ends the session everywhere, with its reason.
    let (api0, parties0, key0) = (apis[0].clone(), parties.clone(), key.clone());
    let waiting = std::thread::spawn(move || {
        query(&api0, "SELECT MAX(age) FROM patients", &parties0, &["--analyst", "alice", "--key", &key0])
    });
    wait_until("the third request on c", 30, || approvals(&apis[2]).len() == 1);
    let id3 = approvals(&apis[2])[0]["id"].as_str().unwrap().to_owned();
    ok(&concord(&["approvals", "approve", &id3, "--node", &node(0), "--by", "dr-a"]));
    ok(&concord(&["approvals", "reject", &id3, "--reason", "not this study", "--node", &node(2), "--by", "dr-c"]));
    let err = fails(&waiting.join().unwrap());
    assert!(err.contains("not this study"), "{err}");
    wait_until("the rejection everywhere", 10, || apis.iter().all(|a| session(a, &id3)["state"] == "cancelled"));
    let done: Vec<usize> = apis.iter().map(|a| sessions(a).iter().filter(|s| s["state"] == "done").count()).collect();
    assert_eq!(done, vec![1, 1, 1], "only the approved session ran");
}
