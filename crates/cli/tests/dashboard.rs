//! The node dashboard in a real browser: a `concord node` with a dataset, a
//! paired peer that is up, and a session running with it; its page loaded by headless Chromium; the test checks the
//! text a person would see and saves a screenshot to
//! `<target>/artefacts/dashboard.png`.
//!
//! Chromium is `CONCORD_CHROMIUM` or `/usr/bin/chromium` (Debian's `chromium`
//! package, which `.ci/run` installs). Without it the test fails when `CI` is
//! set and is skipped, loudly, otherwise.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::post_form;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

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

/// How long any one command (a `concord` subcommand, a Chromium run) may take.
const TIMEOUT: Duration = Duration::from_secs(90);

struct Dir(PathBuf);
impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A child process killed (and reaped) when dropped.
struct Killed(Child);
impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Run `cmd` to completion within [`TIMEOUT`] (killed otherwise), its output
/// collected through files so a chatty process cannot block on a full pipe.
fn run(mut cmd: Command, scratch: &Path, tag: &str) -> Output {
    let out_path = scratch.join(format!("{tag}.stdout"));
    let err_path = scratch.join(format!("{tag}.stderr"));
    let child = cmd
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(std::fs::File::create(&err_path).unwrap())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {tag}: {e}"));
    let mut child = Killed(child);
    let deadline = Instant::now() + TIMEOUT;
    let status = loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let stderr = std::fs::read_to_string(&err_path).unwrap_or_default();
            panic!("{tag} did not finish within {TIMEOUT:?}; stderr:\n{stderr}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    Output { status, stdout: std::fs::read(&out_path).unwrap(), stderr: std::fs::read(&err_path).unwrap() }
}

fn concord(args: &[&str], scratch: &Path) -> String {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_concord"));
    cmd.args(args).env_remove("CONCORD_DIR");
    let out = run(cmd, scratch, "concord");
    assert!(out.status.success(), "concord {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// Start `concord node` (API on a free port, `env` added); its address once it listens.
fn start_node(dir: &str, env: &[(&str, &str)]) -> (Killed, SocketAddr) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_concord"));
    cmd.args(["node", "--dir", dir, "--api-listen", "127.0.0.1:0"])
        .env_remove("CONCORD_DIR")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let stdout = child.stdout.take().unwrap();
    let node = Killed(child);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = rx.recv_timeout(TIMEOUT).expect("the node did not print its address in time");
    let addr = line.trim().strip_prefix("listening on http://").expect(&line).parse().unwrap();
    (node, addr)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// GET `path` from the node at `addr`, as JSON.
fn get_json(addr: SocketAddr, path: &str) -> serde_json::Value {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(stream, "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    serde_json::from_str(response.split_once("\r\n\r\n").unwrap().1).unwrap()
}

fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + TIMEOUT;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Chromium, or `None` if it is not installed (and the test may be skipped).
fn chromium() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("CONCORD_CHROMIUM") {
        let path = PathBuf::from(path);
        assert!(path.exists(), "CONCORD_CHROMIUM={} does not exist", path.display());
        return Some(path);
    }
    let path = PathBuf::from("/usr/bin/chromium");
    path.exists().then_some(path)
}

/// [`chromium`], or `None` after saying the test is skipped; under CI the test must run, so it fails.
fn chromium_or_skip() -> Option<PathBuf> {
    let found = chromium();
    if found.is_none() {
        if std::env::var_os("CI").is_some() {
            panic!("chromium is not installed (CI is set, so the dashboard test must run): apt-get install chromium");
        }
        eprintln!("\n*** SKIPPED: chromium not installed (apt-get install chromium) ***\n");
    }
    found
}

/// Headless Chromium with a fresh profile and nothing running in the background.
fn chromium_command(chromium: &Path, profile: &Path) -> Command {
    let mut cmd = Command::new(chromium);
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-quic",
        "--no-first-run",
        "--no-default-browser-check",
        "--no-proxy-server",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-extensions",
        "--hide-scrollbars",
    ])
    .arg(format!("--user-data-dir={}", profile.display()));
    cmd
}

/// The Cargo target directory: `CARGO_TARGET_DIR` if absolute, else three
/// levels above this test binary (`<target>/debug/deps/dashboard-*`).
fn target_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).filter(|d| d.is_absolute()) {
        return dir;
    }
    let exe = std::env::current_exe().unwrap();
    exe.ancestors().nth(3).expect("test binary outside a target directory").to_path_buf()
}

/// The text of `html`'s body as a person reads it: tags dropped, the few
/// entities the page uses decoded, whitespace collapsed.
fn visible_text(html: &str) -> String {
    let body = html.split_once("<body").map_or(html, |(_, b)| b);
    let mut text = String::new();
    let mut in_tag = true; // inside the `<body ...>` tag itself
    for c in body.chars() {
        match c {
            '<' => {
                in_tag = true;
                text.push(' ');
            }
            '>' if in_tag => in_tag = false,
            c if !in_tag => text.push(c),
            _ => {}
        }
    }
    let text = text.replace("&lt;", "<").replace("&gt;", ">").replace("&quot;", "\"").replace("&#39;", "'");
    text.replace("&amp;", "&").split_whitespace().collect::<Vec<_>>().join(" ")
}

#[test]
fn dashboard_in_headless_chromium() {
    let Some(chromium) = chromium_or_skip() else { return };

    let root = Dir(std::env::temp_dir().join(format!("concord-cli-dashboard-{}", std::process::id())));
    let _ = std::fs::remove_dir_all(&root.0);
    std::fs::create_dir_all(&root.0).unwrap();
    let scratch = root.0.as_path();
    let (a_path, b_path) = (root.0.join("a"), root.0.join("b"));
    let (a, b) = (a_path.to_str().unwrap(), b_path.to_str().unwrap());

    // Nodes A and B, each with its own part of the dataset, paired and
    // running; one session done, one running (B is held up in it).
    let mpc = || format!("127.0.0.1:{}", free_port());
    concord(&["init", "--name", "hospital-a", "--dir", a, "--mpc-listen", &mpc()], scratch);
    concord(&["init", "--name", "hospital-b", "--dir", b, "--mpc-listen", &mpc()], scratch);
    let schema = root.0.join("schema.toml");
    std::fs::write(&schema, SCHEMA).unwrap();
    let schema = schema.to_str().unwrap();
    for (dir, rows) in [(a, "age,ward\n30,a\n40,b\n50,a\n"), (b, "age,ward\n60,b\n70,a\n")] {
        let data = Path::new(dir).with_extension("csv");
        std::fs::write(&data, rows).unwrap();
        concord(
            &["dataset", "add", "patients", "--file", data.to_str().unwrap(), "--schema", schema, "--dir", dir],
            scratch,
        );
    }
    let (_node_a, addr) = start_node(a, &[]);
    let (_node_b, _) = start_node(b, &[("CONCORD_TEST_SESSION_DELAY_MS", "60000")]);
    let invitation = concord(&["peer", "invite", "--dir", a, "--api", &addr.to_string()], scratch);
    let joined = concord(&["peer", "join", invitation.trim(), "--dir", b], scratch);
    assert!(joined.contains("Paired with \"hospital-a\""), "{joined}");
    wait_until("hospital-b up", || get_json(addr, "/api/peers")["peers"][0]["health"] == "up");
    // A two-party session coordinated by A; B holds it up (test hook), so the page shows it running.
    let node_a = format!("http://{addr}");
    let mut slow = Command::new(env!("CARGO_BIN_EXE_concord"));
    slow.args([
        "query",
        "--node",
        &node_a,
        "--parties",
        "hospital-a,hospital-b",
        "--sql",
        "SELECT COUNT(*), AVG(age) FROM patients",
    ])
    .env_remove("CONCORD_DIR")
    .stdout(Stdio::null())
    .stderr(Stdio::null());
    let _slow = Killed(slow.spawn().unwrap());
    wait_until("hospital-b connected in the running session", || {
        get_json(addr, "/api/sessions")["sessions"][0]["progress"]
            .as_array()
            .is_some_and(|p| p.iter().any(|p| p["party"] == "hospital-b" && p["phase"] == "connected"))
    });
    let url = format!("http://{addr}/");

    // The DOM as Chromium built it, read as a person would.
    let mut cmd = chromium_command(&chromium, &root.0.join("profile-dom"));
    cmd.args(["--dump-dom", &url]);
    let out = run(cmd, scratch, "chromium-dump-dom");
    let dom = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success() && dom.contains("</html>"),
        "chromium --dump-dom failed ({}); stdout:\n{dom}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(dom.contains("<title>hospital-a · Concord node</title>"), "{dom}");
    assert!(!dom.contains("<script"), "{dom}");
    let text = visible_text(&dom);
    for seen in [
        "Concord node hospital-a",
        "refreshes every 2 s",
        "Peers (1)",
        "Datasets (1)",
        "Sessions (1)",
        "Events (",
        // the peer, its health and address
        "hospital-b up 127.0.0.1:",
        // the running session, with each party's phase
        "running",
        "SELECT COUNT(*), AVG(age) FROM patients",
        "hospital-b: connected",
        "session.created",
        // the dataset: name, status, table, columns
        "patients valid patients age, ward",
        "dataset.added",
        "peer.paired",
        " UTC",
        // the audit trail: signed entries and the head checkpoint
        "Audit trail (",
        "session.accepted",
        "signed head checkpoint of entry",
    ] {
        assert!(text.contains(seen), "the page does not show {seen:?}; it shows:\n{text}");
    }
    assert!(!text.contains("No peers paired yet") && !text.contains("No datasets registered yet"), "{text}");
    assert!(!dom.contains("patients.csv"), "the data file's path is served: {dom}");

    // A screenshot, kept as a test artefact.
    let artefacts = target_dir().join("artefacts");
    std::fs::create_dir_all(&artefacts).unwrap();
    let png = artefacts.join("dashboard.png");
    let _ = std::fs::remove_file(&png);
    let mut cmd = chromium_command(&chromium, &root.0.join("profile-shot"));
    cmd.arg(format!("--screenshot={}", png.display())).args(["--window-size=1280,900", &url]);
    let out = run(cmd, scratch, "chromium-screenshot");
    assert!(out.status.success(), "chromium --screenshot failed: {}", String::from_utf8_lossy(&out.stderr));
    let bytes = std::fs::read(&png).unwrap_or_else(|e| panic!("no screenshot at {}: {e}", png.display()));
    assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n"), "{} is not a PNG", png.display());
    let (width, height) =
        (u32::from_be_bytes(bytes[16..20].try_into().unwrap()), u32::from_be_bytes(bytes[20..24].try_into().unwrap()));
    assert_eq!((width, height), (1280, 900), "unexpected screenshot size");
    assert!(bytes.len() > 10_000, "the screenshot is suspiciously small ({} bytes): a blank page?", bytes.len());
    eprintln!("dashboard screenshot: {} ({} bytes)", png.display(), bytes.len());
}

/// In a DOM Chromium built: the action of the form posting to `.../{decision}` and its hidden token.
fn form_of(dom: &str, decision: &str) -> (String, String) {
    let end = dom.find(&format!("/{decision}\"")).unwrap_or_else(|| panic!("no {decision} form in:\n{dom}"));
    let start = dom[..end].rfind("action=\"").unwrap() + "action=\"".len();
    let action = dom[start..end + decision.len() + 1].to_owned();
    let rest = &dom[end..];
    let v = rest.find("name=\"csrf\" value=\"").unwrap() + "name=\"csrf\" value=\"".len();
    let token = rest[v..].split('"').next().unwrap().to_owned();
    (action, token)
}

#[test]
fn approve_and_veto_from_the_approvals_page_in_headless_chromium() {
    let Some(chromium) = chromium_or_skip() else { return };
    let root = Dir(std::env::temp_dir().join(format!("concord-cli-approvals-{}", std::process::id())));
    let _ = std::fs::remove_dir_all(&root.0);
    std::fs::create_dir_all(&root.0).unwrap();
    let scratch = root.0.as_path();
    let (a_path, b_path) = (root.0.join("a"), root.0.join("b"));
    let (a, b) = (a_path.to_str().unwrap(), b_path.to_str().unwrap());
    let mpc = || format!("127.0.0.1:{}", free_port());
    concord(&["init", "--name", "hospital-a", "--dir", a, "--mpc-listen", &mpc()], scratch);
    concord(&["init", "--name", "hospital-b", "--dir", b, "--mpc-listen", &mpc()], scratch);
    // B's operator approves every query of alice by hand.
    let config = std::fs::read_to_string(b_path.join("concord.toml")).unwrap();
    std::fs::write(
        b_path.join("concord.toml"),
        config.replace("# policy = \"policy.toml\"", "policy = \"policy.toml\""),
    )
    .unwrap();
    std::fs::write(
        b_path.join("policy.toml"),
        "[[rule]]\nname = \"by-hand\"\nanalysts = [\"alice\"]\ndatasets = [\"patients\"]\ncolumns = [\"*\"]\n\
         functions = [\"*\"]\nwhere_columns = [\"*\"]\ngroup_by_columns = [\"*\"]\nrequire_operator_approval = true\n",
    )
    .unwrap();
    let schema = root.0.join("schema.toml");
    std::fs::write(&schema, SCHEMA).unwrap();
    let schema = schema.to_str().unwrap();
    let key = root.0.join("alice.key");
    let public = concord(&["analyst", "new", "--out", key.to_str().unwrap()], scratch);
    for (dir, rows) in [(a, "age,ward\n30,a\n40,b\n50,a\n"), (b, "age,ward\n60,b\n70,a\n")] {
        let data = Path::new(dir).with_extension("csv");
        std::fs::write(&data, rows).unwrap();
        concord(
            &["dataset", "add", "patients", "--file", data.to_str().unwrap(), "--schema", schema, "--dir", dir],
            scratch,
        );
        concord(&["analyst", "add", "alice", public.trim(), "--dir", dir], scratch);
    }
    let (_node_a, addr_a) = start_node(a, &[]);
    let (_node_b, addr_b) = start_node(b, &[]);
    let invitation = concord(&["peer", "invite", "--dir", a, "--api", &addr_a.to_string()], scratch);
    concord(&["peer", "join", invitation.trim(), "--dir", b], scratch);
    wait_until("hospital-b up", || get_json(addr_a, "/api/peers")["peers"][0]["health"] == "up");
    let ask = || {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_concord"));
        cmd.args(["query", "--node", &format!("http://{addr_a}"), "--parties", "hospital-a,hospital-b"])
            .args(["--sql", "SELECT COUNT(*), AVG(age) FROM patients", "--format", "json"])
            .args(["--analyst", "alice", "--key", key.to_str().unwrap()])
            .env_remove("CONCORD_DIR");
        std::thread::spawn(move || cmd.output().unwrap())
    };
    let dump = |tag: &str, url: &str| -> String {
        let mut cmd = chromium_command(&chromium, &root.0.join(format!("profile-{tag}")));
        cmd.args(["--dump-dom", url]);
        let out = run(cmd, scratch, tag);
        assert!(out.status.success(), "chromium failed: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let approvals_url = format!("http://{addr_b}/approvals");

    // 1. The query waits; B's page shows it with its plan and an Approve button; approving runs it.
    let first = ask();
    wait_until("a session waiting at hospital-b", || {
        get_json(addr_b, "/api/approvals")["approvals"].as_array().is_some_and(|a| !a.is_empty())
    });
    let dom = dump("approvals-1", &approvals_url);
    let text = visible_text(&dom);
    for seen in ["Approvals at hospital-b", "analyst alice", "coordinator hospital-a", "revealed to the analyst only"] {
        assert!(text.contains(seen), "the page does not show {seen:?}: {text}");
    }
    let home = visible_text(&dump("home-1", &format!("http://{addr_b}/")));
    assert!(home.contains("Waiting for your approval (1)"), "{home}");
    // The page as a screenshot, kept as a test artefact.
    let png = target_dir().join("artefacts").join("approvals.png");
    std::fs::create_dir_all(png.parent().unwrap()).unwrap();
    let mut cmd = chromium_command(&chromium, &root.0.join("profile-shot"));
    cmd.arg(format!("--screenshot={}", png.display())).args(["--window-size=1280,900", &approvals_url]);
    assert!(run(cmd, scratch, "approvals-shot").status.success());
    // Submit the Approve form as the browser would (the page has no script; the form is plain HTML).
    let (action, token) = form_of(&dom, "approve");
    let (status, body) = post_form(addr_b, &action, &format!("csrf={token}&decision=approve"));
    assert_eq!(status, 303, "{body}");
    let out = first.join().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["rows"][0][0], 5, "{v}");
    // A forged form (wrong token) is refused.
    let (status, body) = post_form(addr_b, &action, "csrf=0000&decision=approve");
    assert_eq!(status, 403, "{body}");

    // 2. The next query is vetoed from the page, with a reason: it ends everywhere with it.
    let second = ask();
    wait_until("another session waiting at hospital-b", || {
        get_json(addr_b, "/api/approvals")["approvals"].as_array().is_some_and(|a| !a.is_empty())
    });
    let dom = dump("approvals-2", &approvals_url);
    let (action, token) = form_of(&dom, "veto");
    let (status, body) = post_form(addr_b, &action, &format!("csrf={token}&reason=not+without+the+ethics+board"));
    assert_eq!(status, 303, "{body}");
    let out = second.join().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("not without the ethics board"), "{err}");
    let home = visible_text(&dump("home-2", &format!("http://{addr_b}/")));
    assert!(home.contains("cancelled") && home.contains("not without the ethics board"), "{home}");
}
