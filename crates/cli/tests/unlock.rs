//! Threshold unlock through five `concord node` processes ("3 of 5 doctors
//! unlock a record"): a 3-of-5 consortium and its unlock key (every member
//! the same public key, no share served), a file sealed locally (through the
//! node's public key and offline), unsealed with 3 operator approvals
//! (content identical); with 2 approvals it fails naming the nodes that did
//! not approve; a node that sends a forged decryption share is named and its
//! share set aside; a tampered sealed file is refused.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::nodes::{http, init_node, pair_all, start, wait_all_up, wait_until, Node};
use common::{concord, fails, ok, TempDir};

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::time::Instant;

const NAMES: [&str; 5] = ["doctor-a", "doctor-b", "doctor-c", "doctor-d", "doctor-e"];

/// `concord unseal ...` running in the background, its request id read from its first line.
struct Unseal {
    child: Child,
    stderr: BufReader<std::process::ChildStderr>,
    id: String,
    seen: String,
}

fn unseal(args: &[&str]) -> Unseal {
    let mut child = Command::new(env!("CARGO_BIN_EXE_concord"))
        .arg("unseal")
        .args(args)
        .env_remove("CONCORD_DIR")
        .env("RUST_BACKTRACE", "0")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    stderr.read_line(&mut line).unwrap();
    let id = line
        .strip_prefix("request ")
        .and_then(|r| r.split_whitespace().next())
        .unwrap_or_else(|| {
            let mut rest = String::new();
            let _ = stderr.read_to_string(&mut rest);
            panic!("unseal did not start: {line}{rest}")
        })
        .to_owned();
    Unseal { child, stderr, id, seen: line }
}

impl Unseal {
    /// Wait for its exit: (success, stdout, everything it wrote to stderr).
    fn finish(mut self) -> (bool, String, String) {
        let mut rest = String::new();
        self.stderr.read_to_string(&mut rest).unwrap();
        let mut out = String::new();
        self.child.stdout.take().unwrap().read_to_string(&mut out).unwrap();
        let status = self.child.wait().unwrap();
        (status.success(), out, self.seen + &rest)
    }
}

fn decide(api: &str, id: &str, decision: &str) -> String {
    let node = format!("http://{api}");
    if decision == "approve" {
        ok(&concord(&["unlock", "approve", id, "--node", &node, "--by", "dr-test"]))
    } else {
        ok(&concord(&["unlock", "reject", id, "--node", &node, "--reason", "not for this study"]))
    }
}

/// Decide on unlock request `id` from node `api`'s approvals page, as a browser
/// would: the form's action and anti-forgery token come from the page.
fn decide_on_page(api: &str, id: &str, decision: &str, reason: &str) {
    let (status, page) = common::get(api, "/approvals");
    assert_eq!(status, 200, "{page}");
    let action = format!("/ui/unlock-requests/{id}/{decision}");
    let at =
        page.find(&format!("action=\"{action}\"")).unwrap_or_else(|| panic!("no {decision} form for {id}: {page}"));
    let rest = &page[at..];
    let v = rest.find("name=\"csrf\" value=\"").unwrap() + "name=\"csrf\" value=\"".len();
    let token = rest[v..].split('"').next().unwrap();
    let (status, body) = common::post_form(api, &action, &format!("csrf=bad{token}"));
    assert_eq!(status, 403, "a forged token is refused: {body}");
    let (status, body) = common::post_form(api, &action, &format!("csrf={token}&reason={}", reason.replace(' ', "+")));
    assert_eq!(status, 303, "{body}");
}

/// Wait until node `api` lists request `id` (forwarded by the requester).
fn wait_request(api: &str, id: &str) {
    wait_until(&format!("request {id} on {api}"), 30, || {
        let (_, v) = http(api, "GET", "/api/unlock-requests", "");
        v["unlock_requests"].as_array().is_some_and(|rs| rs.iter().any(|r| r["id"] == id))
    });
}

/// Wait until the requester has `n` answers to request `id`.
fn wait_answers(api: &str, id: &str, n: usize) {
    wait_until(&format!("{n} answers to {id}"), 30, || {
        let (_, v) = http(api, "GET", &format!("/api/unlock-requests/{id}"), "");
        v["responses"].as_array().is_some_and(|rs| rs.iter().filter(|r| r["decision"] != "pending").count() >= n)
    });
}

#[test]
fn three_of_five_doctors_unlock_a_record() {
    let root = TempDir::new("unlock");
    let mut dirs = Vec::new();
    let mut apis = Vec::new();
    for name in NAMES {
        let dir = root.join(name);
        apis.push(init_node(&dir, name, |c| c));
        dirs.push(dir);
    }
    // doctor-e's node sends forged decryption shares (test hook).
    let _nodes: Vec<Node> = (0..5)
        .map(|i| {
            let env: &[(&str, &str)] = if i == 4 { &[("CONCORD_TEST_FORGE_UNLOCK_SHARE", "1")] } else { &[] };
            start(&dirs[i], &apis[i], env)
        })
        .collect();
    pair_all(&dirs);
    wait_all_up(&apis);
    let node_a = format!("http://{}", apis[0]);
    let node_b = format!("http://{}", apis[1]);
    ok(&concord(&[
        "consortium",
        "create",
        "clinic",
        "--members",
        &NAMES.join(","),
        "--threshold",
        "3",
        "--node",
        &node_a,
    ]));

    // Before the unlock key exists, sealing is refused, naming the consortium.
    let record = root.join("record.txt");
    let content = "patient 17: HbA1c 6.1 %, retinopathy grade 2\n".repeat(20);
    std::fs::write(&record, &content).unwrap();
    let sealed = root.join("record.sealed");
    let err = fails(&concord(&["seal", &record, "--consortium", "clinic", "--node", &node_a, "--out", &sealed]));
    assert!(err.contains("no unlock key for consortium \"clinic\""), "{err}");

    // The unlock key: a 3-of-5 threshold ElGamal DKG driven by doctor-c's node.
    let started = Instant::now();
    let out = ok(&concord(&["unlock", "setup", "clinic", "--node", &format!("http://{}", apis[2])]));
    eprintln!("{out}(unlock DKG, 5 nodes: {:.3} s)", started.elapsed().as_secs_f64());
    assert!(out.contains("is active") && out.contains("any 3 of 5"), "{out}");
    let mut keys = Vec::new();
    for api in &apis {
        let (status, v) = http(api, "GET", "/api/unlock-keys", "");
        assert_eq!(status, 200);
        let k = &v["unlock_keys"][0];
        assert_eq!(
            (k["consortium"].as_str(), k["state"].as_str(), k["threshold"].as_u64()),
            (Some("clinic"), Some("active"), Some(3))
        );
        assert_eq!(k["coordinator"], "doctor-c");
        let text = v.to_string();
        assert!(!text.contains("secret"), "{text}");
        keys.push(k["public_key"].clone());
    }
    assert!(keys.iter().all(|k| *k == keys[0] && k["shared_key"].is_string()), "{keys:?}");
    let again = fails(&concord(&["unlock", "setup", "clinic", "--node", &node_a]));
    assert!(again.contains("has an unlock key already"), "{again}");
    let (_, doc) = http(&apis[0], "GET", "/openapi.json", "");
    assert!(doc["paths"]["/api/unlock-requests"]["post"].is_object(), "{doc}");

    // Sealing: through a node's public key, and offline with the key printed by `unlock key`.
    let out = ok(&concord(&["seal", &record, "--consortium", "clinic", "--node", &node_a, "--out", &sealed]));
    assert!(out.contains("any 3 of the 5 members"), "{out}");
    let bytes = std::fs::read(&sealed).unwrap();
    assert!(bytes.starts_with(b"CNCDSEAL\x01"));
    assert_eq!(bytes.len(), 85 + content.len() + 16);
    assert!(!String::from_utf8_lossy(&bytes).contains("patient"));
    let key = ok(&concord(&["unlock", "key", "clinic", "--node", &node_b]));
    let key_file = root.join("clinic.key");
    std::fs::write(&key_file, &key).unwrap();
    let offline = root.join("offline.sealed");
    ok(&concord(&["seal", &record, "--public-key", &format!("@{key_file}"), "--out", &offline]));

    // 3 approvals (b, c, d): the record comes back, identical.
    let out_file = root.join("record.out");
    let started = Instant::now();
    let u = unseal(&[&sealed, "--node", &node_a, "--out", &out_file, "--reason", "tumour board", "--timeout", "60"]);
    for api in &apis[1..] {
        wait_request(api, &u.id);
    }
    let listed = ok(&concord(&["unlock", "requests", "--node", &node_b]));
    assert!(listed.contains(&u.id) && listed.contains("tumour board") && listed.contains("doctor-a"), "{listed}");
    for api in &apis[1..3] {
        let said = decide(api, &u.id, "approve");
        assert!(said.contains("sent to doctor-a"), "{said}");
    }
    // The third from the dashboard: listed there with the reason, approved with the page's form.
    let (_, dashboard) = common::get(&apis[3], "/");
    assert!(dashboard.contains(&u.id) && dashboard.contains("tumour board"), "{dashboard}");
    decide_on_page(&apis[3], &u.id, "approve", "");
    let (success, stdout, stderr) = u.finish();
    assert!(success, "{stdout}{stderr}");
    eprintln!("{stderr}{stdout}(unseal with 3 approvals: {:.3} s)", started.elapsed().as_secs_f64());
    assert!(stderr.contains("2 of 3 approvals") || stderr.contains("3 of 3 approvals"), "{stderr}");
    assert_eq!(std::fs::read_to_string(&out_file).unwrap(), content);
    // An approval is given once.
    let again = fails(&concord(&["unlock", "approve", &stderr_id(&stderr), "--node", &node_b]));
    assert!(again.contains("approved already"), "{again}");

    // Only 2 approvals (a, b), c rejects, d and e never answer: fails after the timeout, naming them.
    let u = unseal(&[&offline, "--node", &node_b, "--out", &root.join("offline.out"), "--timeout", "10"]);
    for api in &apis {
        wait_request(api, &u.id);
    }
    decide(&apis[0], &u.id, "approve");
    decide(&apis[1], &u.id, "approve");
    decide_on_page(&apis[2], &u.id, "reject", "not for this study");
    let (success, _, stderr) = u.finish();
    assert!(!success);
    assert!(stderr.contains("2 of the 3 approvals needed after 10 s"), "{stderr}");
    assert!(stderr.contains("2 of 3 approvals (approved: doctor-a, doctor-b)"), "{stderr}");
    assert!(
        stderr.contains(
            "\"doctor-c\" (rejected: not for this study), \"doctor-d\" (no answer), \"doctor-e\" (no answer)"
        ),
        "{stderr}"
    );
    assert!(!root.0.join("offline.out").exists());

    // doctor-e's forged share is named and set aside; a further approval opens the file.
    let out_file = root.join("forged.out");
    let u = unseal(&[&sealed, "--node", &node_a, "--out", &out_file, "--timeout", "60"]);
    for api in &apis[1..] {
        wait_request(api, &u.id);
    }
    decide(&apis[0], &u.id, "approve");
    decide(&apis[1], &u.id, "approve");
    decide(&apis[4], &u.id, "approve");
    wait_answers(&apis[0], &u.id, 3);
    decide(&apis[3], &u.id, "approve");
    let (success, stdout, stderr) = u.finish();
    assert!(success, "{stdout}{stderr}");
    assert!(
        stderr.contains("the decryption share from node \"doctor-e\" is refused")
            && stderr.contains("forged decryption share"),
        "{stderr}"
    );
    assert_eq!(std::fs::read_to_string(&out_file).unwrap(), content);

    // With the forger among only three approvals, unsealing fails naming it.
    let u = unseal(&[&sealed, "--node", &node_a, "--out", &root.join("x.out"), "--timeout", "60"]);
    for api in &apis[1..] {
        wait_request(api, &u.id);
    }
    decide(&apis[0], &u.id, "approve");
    decide(&apis[1], &u.id, "approve");
    decide(&apis[4], &u.id, "approve");
    decide(&apis[2], &u.id, "reject");
    decide(&apis[3], &u.id, "reject");
    let (success, _, stderr) = u.finish();
    assert!(!success);
    assert!(stderr.contains("\"doctor-e\" (forged share:"), "{stderr}");

    // A tampered sealed file: refused at once if its header is broken, after approvals if its body is.
    let mut bad = bytes.clone();
    bad[0] ^= 1;
    let bad_file = root.join("bad-magic.sealed");
    std::fs::write(&bad_file, &bad).unwrap();
    let err = fails(&concord(&["unseal", &bad_file, "--node", &node_a, "--out", &root.join("y.out")]));
    assert!(err.contains("bad magic"), "{err}");
    let mut bad = bytes.clone();
    let mid = 85 + content.len() / 2;
    bad[mid] ^= 1;
    let bad_file = root.join("tampered.sealed");
    std::fs::write(&bad_file, &bad).unwrap();
    let u = unseal(&[&bad_file, "--node", &node_a, "--out", &root.join("z.out"), "--timeout", "60"]);
    for api in &apis[1..] {
        wait_request(api, &u.id);
    }
    for api in &apis[..3] {
        decide(api, &u.id, "approve");
    }
    let (success, _, stderr) = u.finish();
    assert!(!success);
    assert!(stderr.contains("failed authentication"), "{stderr}");
    assert!(!root.0.join("z.out").exists());
}

/// The request id in the first line of `concord unseal`'s progress output.
fn stderr_id(stderr: &str) -> String {
    stderr.strip_prefix("request ").and_then(|r| r.split_whitespace().next()).unwrap().to_owned()
}
