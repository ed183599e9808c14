//! Helpers shared by the `concord` binary's end-to-end tests: temporary
//! directories, child processes killed on drop, running `concord`, and a
//! plain HTTP/1.1 client for the node's API.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

pub mod nodes;

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::process::{Child, Command, Output};
use std::time::Duration;

/// A fresh temporary directory, removed on drop unless the test failed
/// (then kept, and named, for the failure report).
pub struct TempDir(pub PathBuf);

impl TempDir {
    /// `$TMPDIR/concord-{tag}-{pid}-{n}` (`n` counts the directories this
    /// process made, so parallel tests never share one), emptied first.
    pub fn new(tag: &str) -> TempDir {
        static MADE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = MADE.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("concord-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }

    /// A path inside, as a string.
    pub fn join(&self, name: &str) -> String {
        self.0.join(name).to_str().unwrap().to_owned()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("test files kept in {}", self.0.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// A child process, killed and reaped on drop.
pub struct Killed(pub Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `concord ARGS` (no `CONCORD_DIR` from the environment, no backtraces in errors).
pub fn concord(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_concord"))
        .args(args)
        .env_remove("CONCORD_DIR")
        .env("RUST_BACKTRACE", "0")
        .output()
        .unwrap()
}

/// Its stdout, asserting success.
pub fn ok(out: &Output) -> String {
    assert!(out.status.success(), "stderr: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout.clone()).unwrap()
}

/// Its stderr, asserting failure.
pub fn fails(out: &Output) -> String {
    assert!(!out.status.success(), "unexpected success: {}", String::from_utf8_lossy(&out.stdout));
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A TCP port on 127.0.0.1 that was free when asked, below the kernel's
/// ephemeral range (32768 and up on Linux), so that the outgoing connections
/// of other tests, which take ephemeral ports, cannot grab it before the node
/// binds it; never the same port twice in one test process. The candidates
/// are spread by the process id, so parallel test binaries start apart.
pub fn free_port() -> u16 {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let base = (std::process::id().wrapping_mul(7919)) % 12_000;
    loop {
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let port = 20_000 + ((base + n * 37) % 12_000) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
        assert!(n < 12_000, "no free port below the ephemeral range");
    }
}

/// One HTTP/1.1 request (JSON body, possibly empty); status and body.
pub fn http(addr: impl ToSocketAddrs, method: &str, path: &str, body: &str) -> (u16, String) {
    request(addr, method, path, "application/json", body)
}

/// `POST path` of an HTML form (`application/x-www-form-urlencoded`), as a browser sends it.
pub fn post_form(addr: impl ToSocketAddrs, path: &str, form: &str) -> (u16, String) {
    request(addr, "POST", path, "application/x-www-form-urlencoded", form)
}

fn request(addr: impl ToSocketAddrs, method: &str, path: &str, content_type: &str, body: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    (head.split(' ').nth(1).unwrap().parse().unwrap(), body.to_owned())
}

/// `GET path`; status and body.
pub fn get(addr: impl ToSocketAddrs, path: &str) -> (u16, String) {
    http(addr, "GET", path, "")
}
