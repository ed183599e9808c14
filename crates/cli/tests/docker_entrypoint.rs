//! `docker/entrypoint.sh`, the container image's entrypoint, run outside a
//! container: first start (init with the listen and advertised addresses,
//! datasets of CONCORD_DATASETS registered from the demo data in
//! docker/data/), restart (no second init, datasets already registered), and
//! the refusals of a bad environment.

#![cfg(unix)]
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::{Killed, TempDir};

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use serde_json::Value as J;

const ENTRYPOINT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docker/entrypoint.sh");
const DATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docker/data");

/// `sh docker/entrypoint.sh` with only `vars` (and a PATH finding this build's `concord`).
fn entrypoint(vars: &[(&str, &str)]) -> Command {
    let bin = Path::new(env!("CARGO_BIN_EXE_concord")).parent().unwrap();
    let mut cmd = Command::new("sh");
    cmd.arg(ENTRYPOINT).env_clear().env("PATH", format!("{}:/usr/bin:/bin", bin.display()));
    for (k, v) in vars {
        cmd.env(k, v);
    }
    cmd
}

/// Start the entrypoint; the lines it printed before the node listened, and the address.
fn start(vars: &[(&str, &str)]) -> (Killed, Vec<String>, SocketAddr) {
    let mut child = entrypoint(vars).stdout(Stdio::piped()).stderr(Stdio::null()).spawn().unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let node = Killed(child);
    let mut lines = Vec::new();
    loop {
        let mut line = String::new();
        assert!(out.read_line(&mut line).unwrap() > 0, "the entrypoint stopped before the node listened: {lines:?}");
        if let Some(addr) = line.trim().strip_prefix("listening on http://") {
            return (node, lines, addr.parse().unwrap());
        }
        lines.push(line.trim_end().to_owned());
    }
}

fn get(addr: SocketAddr, path: &str) -> J {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(stream, "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{response}");
    serde_json::from_str(body).unwrap()
}

fn fails(out: &Output, code: i32) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(code), "stdout: {}\nstderr: {stderr}", String::from_utf8_lossy(&out.stdout));
    stderr
}

#[test]
fn entrypoint_initialises_registers_and_restarts() {
    let root = TempDir(std::env::temp_dir().join(format!("concord-cli-entrypoint-{}", std::process::id())));
    let _ = std::fs::remove_dir_all(&root.0);
    std::fs::create_dir_all(&root.0).unwrap();
    let node_dir = root.0.join("a");
    let dir = node_dir.to_str().unwrap();
    let datasets =
        format!("patients={DATA}/hospital-a.csv={DATA}/schema.toml; \nmore={DATA}/hospital-b.csv={DATA}/schema.toml;");
    let vars = [
        ("CONCORD_DIR", dir),
        ("CONCORD_NAME", "hospital-a"),
        ("CONCORD_API_LISTEN", "127.0.0.1:0"),
        ("CONCORD_MPC_LISTEN", "127.0.0.1:7301"),
        ("CONCORD_DATASETS", &datasets),
    ];

    // First start: init, both datasets registered, then the node itself (exec: same process).
    let (node, lines, addr) = start(&vars);
    let text = lines.join("\n");
    assert!(text.contains("Initialised node \"hospital-a\""), "{text}");
    assert!(text.contains("Registered dataset \"patients\": 40 rows"), "{text}");
    assert!(text.contains("Registered dataset \"more\": 45 rows"), "{text}");
    let comm = std::fs::read_to_string(format!("/proc/{}/comm", node.0.id())).unwrap_or_else(|_| "concord".into());
    assert_eq!(comm.trim(), "concord");
    assert_eq!(get(addr, "/healthz")["name"], "hospital-a");
    let v = get(addr, "/api/datasets");
    let names: Vec<&str> = v["datasets"].as_array().unwrap().iter().map(|d| d["name"].as_str().unwrap()).collect();
    assert_eq!(names.len(), 2, "{v}");
    assert!(names.contains(&"patients") && names.contains(&"more"), "{v}");
    drop(node);
    let config = std::fs::read_to_string(node_dir.join("concord.toml")).unwrap();
    for line in
        ["api_listen = \"127.0.0.1:0\"", "mpc_listen = \"127.0.0.1:7301\"", "advertise_address = \"hospital-a:7301\""]
    {
        assert!(config.contains(&format!("\n{line}\n")), "{line}: {config}");
    }

    // Restart: no second init (it would refuse), datasets already registered.
    let (node, lines, addr) = start(&vars);
    let text = lines.join("\n");
    assert!(!text.contains("Initialised"), "{text}");
    assert!(text.contains("dataset \"patients\" is already registered"), "{text}");
    assert!(text.contains("dataset \"more\" is already registered"), "{text}");
    assert_eq!(get(addr, "/api/datasets")["datasets"].as_array().unwrap().len(), 2);
    drop(node);

    // A malformed CONCORD_DATASETS entry, or a dataset that does not validate: the node does not start.
    let mut bad = vars;
    bad[4] = ("CONCORD_DATASETS", "patients=/data/patients.csv");
    let err = fails(&entrypoint(&bad).output().unwrap(), 64);
    assert!(err.contains("\"patients=/data/patients.csv\" is not NAME=FILE=SCHEMA"), "{err}");
    let missing = format!("other={DATA}/missing.csv={DATA}/schema.toml");
    bad[4] = ("CONCORD_DATASETS", &missing);
    let err = fails(&entrypoint(&bad).output().unwrap(), 1);
    assert!(err.contains("missing.csv") && err.contains("cannot register dataset \"other\""), "{err}");

    // A new node without CONCORD_NAME, or with a bad CONCORD_ADVERTISE: nothing is created.
    let new_dir = root.0.join("b");
    let b = new_dir.to_str().unwrap();
    let err = fails(&entrypoint(&[("CONCORD_DIR", b)]).output().unwrap(), 64);
    assert!(err.contains("set CONCORD_NAME"), "{err}");
    let out = entrypoint(&[("CONCORD_DIR", b), ("CONCORD_NAME", "hospital-b"), ("CONCORD_ADVERTISE", "hospital-b")])
        .output()
        .unwrap();
    let err = fails(&out, 1);
    assert!(err.contains("--advertise-address"), "{err}");
    assert!(!new_dir.join("concord.toml").exists());
}
