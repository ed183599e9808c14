//! `concord peer invite/join/list` end to end: two nodes pair by one-time
//! invitation; reused, tampered and expired invitations are refused and
//! leave both stores unchanged.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::{concord, fails, get, ok, Killed, TempDir};

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value as J;

fn public(dir: &str) -> J {
    serde_json::from_str(&std::fs::read_to_string(format!("{dir}/identity/public.json")).unwrap()).unwrap()
}

fn invite(dir: &str, addr: SocketAddr, ttl: &str) -> String {
    ok(&concord(&["peer", "invite", "--dir", dir, "--api", &addr.to_string(), "--ttl-secs", ttl])).trim().to_owned()
}

#[test]
fn pair_two_nodes_by_invitation() {
    let root = TempDir(std::env::temp_dir().join(format!("concord-cli-peer-{}", std::process::id())));
    let _ = std::fs::remove_dir_all(&root.0);
    std::fs::create_dir_all(&root.0).unwrap();
    let a_path = root.0.join("a");
    let b_path = root.0.join("b");
    let c_path = root.0.join("c");
    let (a, b, c) = (a_path.to_str().unwrap(), b_path.to_str().unwrap(), c_path.to_str().unwrap());
    // A advertises another MPC address than it listens on (as in containers); B its listen address.
    let err = fails(&concord(&["init", "--name", "hospital-a", "--advertise-address", "a.example", "--dir", a]));
    assert!(err.contains("--advertise-address") && err.contains("HOST:PORT"), "{err}");
    assert!(!a_path.exists());
    ok(&concord(&[
        "init",
        "--name",
        "hospital-a",
        "--mpc-listen",
        "0.0.0.0:7401",
        "--advertise-address",
        "a.example:7401",
        "--dir",
        a,
    ]));
    ok(&concord(&["init", "--name", "hospital-b", "--mpc-listen", "127.0.0.1:7501", "--dir", b]));
    ok(&concord(&["init", "--name", "hospital-c", "--api-listen", "0.0.0.0:7600", "--dir", c]));
    let toml_a = std::fs::read_to_string(a_path.join("concord.toml")).unwrap();
    assert!(toml_a.contains("\nmpc_listen = \"0.0.0.0:7401\"\n"), "{toml_a}");
    assert!(toml_a.contains("\nadvertise_address = \"a.example:7401\"\n"), "{toml_a}");
    // An invitation naming an unspecified API address (0.0.0.0) is refused without --api.
    let err = fails(&concord(&["peer", "invite", "--dir", c]));
    assert!(err.contains("0.0.0.0:7600") && err.contains("--api"), "{err}");
    assert!(ok(&concord(&["peer", "list", "--dir", b])).contains("No peers"));

    let mut child = Command::new(env!("CARGO_BIN_EXE_concord"))
        .args(["node", "--dir", a, "--api-listen", "127.0.0.1:0"])
        .env_remove("CONCORD_DIR")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let _node = Killed(child);
    let addr: SocketAddr = line.trim().strip_prefix("listening on http://").expect(&line).parse().unwrap();

    // Pairing: both sides pin each other's keys.
    let invitation = invite(a, addr, "600");
    assert!(invitation.starts_with("concord-invite:v1:"), "{invitation}");
    let out = ok(&concord(&["peer", "join", &invitation, "--dir", b]));
    assert!(out.contains("Paired with \"hospital-a\""), "{out}");
    let (pa, pb) = (public(a), public(b));
    let short = |v: &J, k: &str| v[k].as_str().unwrap()[..16].to_owned();
    let list_a = ok(&concord(&["peer", "list", "--dir", a]));
    assert!(list_a.contains("hospital-b") && list_a.contains(&short(&pb, "tls_fingerprint")), "{list_a}");
    assert!(list_a.contains(&short(&pb, "ed25519_public")), "{list_a}");
    let list_b = ok(&concord(&["peer", "list", "--dir", b]));
    assert!(list_b.contains("hospital-a") && list_b.contains(&short(&pa, "tls_fingerprint")), "{list_b}");
    assert!(list_b.contains(&addr.to_string()), "{list_b}");
    assert!(list_b.contains("a.example:7401"), "{list_b}");
    assert!(list_a.contains("127.0.0.1:7501"), "{list_a}");
    let (status, body) = get(addr, "/api/peers");
    assert_eq!(status, 200, "{body}");
    let v: J = serde_json::from_str(&body).unwrap();
    assert_eq!(v["peers"][0]["name"], "hospital-b");
    assert_eq!(v["peers"][0]["tls_fingerprint"], pb["tls_fingerprint"]);
    assert_eq!(v["peers"][0]["mpc_address"], "127.0.0.1:7501");

    // Reuse: refused, nothing changes on either side.
    let err = fails(&concord(&["peer", "join", &invitation, "--dir", b]));
    assert!(err.contains("invitation_used"), "{err}");
    let err = fails(&concord(&["peer", "join", &invitation, "--dir", c]));
    assert!(err.contains("invitation_used"), "{err}");
    assert_eq!(without_health(&ok(&concord(&["peer", "list", "--dir", b]))), without_health(&list_b));
    assert_eq!(without_health(&ok(&concord(&["peer", "list", "--dir", a]))), without_health(&list_a));
    assert!(ok(&concord(&["peer", "list", "--dir", c])).contains("No peers"));

    // A tampered invitation (another secret): unknown to A, refused.
    let fresh = invite(a, addr, "600");
    let json = hex_decode(fresh.strip_prefix("concord-invite:v1:").unwrap());
    let mut inv: J = serde_json::from_slice(&json).unwrap();
    inv["secret"] = J::from("44".repeat(32));
    let tampered = format!("concord-invite:v1:{}", hex_encode(inv.to_string().as_bytes()));
    let err = fails(&concord(&["peer", "join", &tampered, "--dir", c]));
    assert!(err.contains("unknown_invitation"), "{err}");
    // A tampered fingerprint: A refuses (the invitation stays unused), nothing is stored.
    let mut inv: J = serde_json::from_slice(&json).unwrap();
    inv["tls_fingerprint"] = J::from("55".repeat(32));
    let tampered = format!("concord-invite:v1:{}", hex_encode(inv.to_string().as_bytes()));
    let err = fails(&concord(&["peer", "join", &tampered, "--dir", c]));
    assert!(err.contains("identity_mismatch"), "{err}");
    assert!(ok(&concord(&["peer", "list", "--dir", c])).contains("No peers"));
    // Malformed invitations name what is wrong.
    let err = fails(&concord(&["peer", "join", "concord-invite:v1:zz", "--dir", c]));
    assert!(err.contains("not hexadecimal"), "{err}");
    let err = fails(&concord(&["peer", "join", &fresh[..fresh.len() - 2], "--dir", c]));
    assert!(err.contains("malformed invitation"), "{err}");

    // Expired.
    let expired = invite(a, addr, "0");
    let err = fails(&concord(&["peer", "join", &expired, "--dir", c]));
    assert!(err.contains("invitation_expired"), "{err}");
    assert!(ok(&concord(&["peer", "list", "--dir", c])).contains("No peers"));
    assert_eq!(without_health(&ok(&concord(&["peer", "list", "--dir", a]))), without_health(&list_a));

    // Server-side checks, bypassing the client's local expiry check.
    let post = |body: &str| {
        let mut stream = TcpStream::connect(addr).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        write!(
            stream,
            "POST /api/pair HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        let (head, body) = response.split_once("\r\n\r\n").unwrap();
        let code = serde_json::from_str::<J>(body).unwrap()["error"]["code"].as_str().unwrap().to_owned();
        (head.split(' ').nth(1).unwrap().parse::<u16>().unwrap(), code)
    };
    let secret_of = |text: &str| {
        let inv: J = serde_json::from_slice(&hex_decode(text.strip_prefix("concord-invite:v1:").unwrap())).unwrap();
        hex_decode(inv["secret"].as_str().unwrap())
    };
    let pc = public(c);
    let request = |id: String, mac: &str| {
        serde_json::json!({ "invitation_id": id, "name": "hospital-c", "ed25519_public": pc["ed25519_public"],
            "tls_fingerprint": pc["tls_fingerprint"], "mpc_address": "127.0.0.1:7301", "mac": mac,
            "expect_ed25519_public": pa["ed25519_public"], "expect_tls_fingerprint": pa["tls_fingerprint"] })
        .to_string()
    };
    let expired_id = concord_node::pairing::invitation_id(&secret_of(&expired));
    assert_eq!(post(&request(expired_id, &"00".repeat(32))), (410, "invitation_expired".into()));
    let fresh_id = concord_node::pairing::invitation_id(&secret_of(&fresh));
    assert_eq!(post(&request(fresh_id, &"00".repeat(32))), (401, "bad_mac".into()));
    assert_eq!(post("{}"), (400, "bad_request".into()));
    // After a bad MAC the invitation still works for its rightful holder.
    let out = ok(&concord(&["peer", "join", &fresh, "--dir", c]));
    assert!(out.contains("Paired with \"hospital-a\""), "{out}");
    assert!(ok(&concord(&["peer", "list", "--dir", a])).contains("hospital-c"));
}

/// `peer list` without its HEALTH column (which the running node's failure detector changes over time).
fn without_health(list: &str) -> Vec<Vec<String>> {
    list.lines()
        .map(|l| {
            let cols: Vec<String> = l.split_whitespace().map(str::to_owned).collect();
            cols.iter().enumerate().filter(|(i, _)| *i != 5).map(|(_, c)| c.clone()).collect()
        })
        .collect()
}

fn hex_encode(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn hex_decode(text: &str) -> Vec<u8> {
    (0..text.len()).step_by(2).map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap()).collect()
}
