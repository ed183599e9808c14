//! Running `concord node` processes for end-to-end tests: start one and
//! wait for its API, call its API, wait for a condition, submit queries.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value as J;

use super::{concord, ok};

/// A running node, killed on drop.
pub struct Node {
    /// The process.
    pub child: Child,
    /// Its directory.
    pub dir: String,
    /// Its API address.
    pub api: String,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One API request; status and JSON body (`null` if not JSON).
pub fn http(api: &str, method: &str, path: &str, body: &str) -> (u16, J) {
    let (status, body) = super::http(api, method, path, body);
    (status, serde_json::from_str(&body).unwrap_or(J::Null))
}

/// Start `concord node --dir dir` (logging to `dir.log`) with extra
/// environment variables, and wait until its API listens.
pub fn start(dir: &str, api: &str, env: &[(&str, &str)]) -> Node {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_concord"));
    let log = std::fs::OpenOptions::new().create(true).append(true).open(format!("{dir}.log")).unwrap();
    cmd.args(["node", "--dir", dir]).env_remove("CONCORD_DIR").stdout(Stdio::piped()).stderr(log);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    assert!(line.starts_with("listening on http://"), "{line}");
    Node { child, dir: dir.to_owned(), api: api.to_owned() }
}

/// Poll `f` every 100 ms until it holds; fail the test after `secs` seconds.
pub fn wait_until(what: &str, secs: u64, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Peer `peer`'s health as node `api` sees it.
pub fn health(api: &str, peer: &str) -> String {
    let (_, v) = http(api, "GET", "/api/peers", "");
    v["peers"].as_array().unwrap().iter().find(|p| p["name"] == peer).unwrap()["health"].as_str().unwrap().to_owned()
}

/// The sessions node `api` knows, newest first.
pub fn sessions(api: &str) -> Vec<J> {
    http(api, "GET", "/api/sessions", "").1["sessions"].as_array().unwrap().clone()
}

/// `concord query` through node `api`, JSON output.
pub fn query(api: &str, sql: &str, parties: &str, extra: &[&str]) -> Output {
    let node = format!("http://{api}");
    let mut args = vec!["query", "--node", &node, "--sql", sql, "--parties", parties, "--format", "json"];
    args.extend_from_slice(extra);
    concord(&args)
}

/// `concord init` a node `name` in `dir` on fresh ports with fast heartbeats,
/// then `edit` its concord.toml; returns its API address.
pub fn init_node(dir: &str, name: &str, edit: impl Fn(String) -> String) -> String {
    let (api, mpc) = (format!("127.0.0.1:{}", super::free_port()), format!("127.0.0.1:{}", super::free_port()));
    ok(&concord(&["init", "--name", name, "--dir", dir, "--api-listen", &api, "--mpc-listen", &mpc]));
    let config = std::fs::read_to_string(format!("{dir}/concord.toml")).unwrap();
    let config = config
        .replace("heartbeat_period_secs = 5", "heartbeat_period_secs = 1")
        .replace("heartbeat_timeout_secs = 20", "heartbeat_timeout_secs = 3");
    std::fs::write(format!("{dir}/concord.toml"), edit(config)).unwrap();
    api
}

/// Pair every two of the nodes in `dirs` by invitation (the nodes run).
pub fn pair_all(dirs: &[String]) {
    for i in 0..dirs.len() {
        for j in i + 1..dirs.len() {
            let inv = ok(&concord(&["peer", "invite", "--dir", &dirs[i]]));
            ok(&concord(&["peer", "join", inv.trim(), "--dir", &dirs[j]]));
        }
    }
}

/// Wait until every node in `apis` sees all the others up (each is paired with all).
pub fn wait_all_up(apis: &[String]) {
    let others = apis.len().saturating_sub(1);
    wait_until("every peer up", 60, || {
        apis.iter().all(|api| {
            let (_, v) = http(api, "GET", "/api/peers", "");
            v["peers"].as_array().is_some_and(|ps| ps.len() == others && ps.iter().all(|p| p["health"] == "up"))
        })
    });
}
