//! `concord init`, `concord dataset add/list` and `concord node` end to end:
//! the node's HTTP API queried over a plain HTTP/1.1 client.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::{concord, get, ok, TempDir};

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value as J;

const SCHEMA: &str = r#"
table = "patients"
max_rows = 1000

[[column]]
name = "age"
type = "int"
min = 0
max = 120

[[column]]
name = "ward"
type = "category"
values = ["a", "b"]
"#;

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[test]
fn init_dataset_and_node_api() {
    let root = TempDir(std::env::temp_dir().join(format!("concord-cli-node-{}", std::process::id())));
    let _ = std::fs::remove_dir_all(&root.0);
    std::fs::create_dir_all(&root.0).unwrap();
    let node_dir = root.0.join("node");
    let dir = node_dir.to_str().unwrap();

    // init: identity, config, store; a second init is refused.
    let out = ok(&concord(&["init", "--name", "hospital-a", "--dir", dir]));
    assert!(out.contains("Ed25519 public key") && out.contains("TLS fingerprint"), "{out}");
    assert_eq!(mode(&node_dir.join("identity/signing.key")), 0o600);
    assert_eq!(mode(&node_dir.join("identity/tls.key")), 0o600);
    let config = std::fs::read_to_string(node_dir.join("concord.toml")).unwrap();
    assert!(config.contains("name = \"hospital-a\"") && config.contains("# "), "{config}");
    let key_before = std::fs::read(node_dir.join("identity/signing.key")).unwrap();
    let again = concord(&["init", "--name", "hospital-a", "--dir", dir]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already holds a node identity"));
    assert_eq!(std::fs::read(node_dir.join("identity/signing.key")).unwrap(), key_before);

    // dataset add: a bad file is refused with row and column; a good one registers.
    let schema = root.0.join("schema.toml");
    std::fs::write(&schema, SCHEMA).unwrap();
    let bad = root.0.join("bad.csv");
    std::fs::write(&bad, "age,ward\n30,a\n40,z\n").unwrap();
    let out = concord(&[
        "dataset",
        "add",
        "patients",
        "--file",
        bad.to_str().unwrap(),
        "--schema",
        schema.to_str().unwrap(),
        "--dir",
        dir,
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.csv") && err.contains("row 2") && err.contains("ward"), "{err}");
    assert!(ok(&concord(&["dataset", "list", "--dir", dir])).contains("No datasets"));
    let good = root.0.join("patients.csv");
    std::fs::write(&good, "age,ward\n30,a\n40,b\n50,a\n").unwrap();
    let out = ok(&concord(&[
        "dataset",
        "add",
        "patients",
        "--file",
        good.to_str().unwrap(),
        "--schema",
        schema.to_str().unwrap(),
        "--dir",
        dir,
    ]));
    assert!(out.contains("3 rows"), "{out}");
    let list = ok(&concord(&["dataset", "list", "--dir", dir]));
    assert!(list.contains("patients") && list.contains("valid") && list.contains(" 3 "), "{list}");
    assert!(ok(&concord(&["dataset", "check", "--dir", dir])).contains("patients: unchanged"));

    // node: on a free port; it prints the bound address.
    let mut child = Command::new(env!("CARGO_BIN_EXE_concord"))
        .args(["node", "--dir", dir, "--api-listen", "127.0.0.1:0"])
        .env_remove("CONCORD_DIR")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let addr: SocketAddr = line.trim().strip_prefix("listening on http://").expect(&line).parse().unwrap();

    let (status, body) = get(addr, "/healthz");
    assert_eq!(status, 200, "{body}");
    let v: J = serde_json::from_str(&body).unwrap();
    assert_eq!((v["status"].as_str(), v["name"].as_str()), (Some("ok"), Some("hospital-a")));

    let (status, body) = get(addr, "/api/datasets");
    assert_eq!(status, 200, "{body}");
    let v: J = serde_json::from_str(&body).unwrap();
    let d = &v["datasets"][0];
    assert_eq!(d["name"], "patients");
    assert_eq!(d["status"], "valid");
    assert_eq!(d["columns"].as_array().unwrap().len(), 2);
    assert!(!body.contains("patients.csv") && d.get("row_count").is_none(), "{body}");

    let (status, body) = get(addr, "/api/datasets/unknown");
    assert_eq!(status, 404);
    assert_eq!(serde_json::from_str::<J>(&body).unwrap()["error"]["code"], "unknown_dataset");

    let (status, body) = get(addr, "/openapi.json");
    assert_eq!(status, 200);
    assert!(serde_json::from_str::<J>(&body).unwrap()["paths"].get("/api/datasets/{name}").is_some());

    let (status, body) = get(addr, "/metrics");
    assert_eq!(status, 200);
    assert!(body.contains("concord_datasets 1\n") && body.contains("concord_http_requests_total{"), "{body}");

    // SIGTERM: graceful shutdown, exit status 0.
    let killed = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(killed.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            child.kill().unwrap();
            panic!("node did not stop after SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    child.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
    assert!(status.success(), "{stderr}");
    assert!(stderr.contains("SIGTERM"), "{stderr}");
    assert!(!stderr.contains(std::str::from_utf8(&key_before).unwrap().trim()), "secret key logged");
}
