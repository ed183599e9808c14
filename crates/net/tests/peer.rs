//! Integration tests of the peer port: preamble routing of session
//! connections, routed TLS transports, and the control RPC. All on 127.0.0.1
//! with port 0.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use concord_net::peer::{
    control_accept, control_call, encode_preamble, ControlRequest, PeerPort, PeerPortConfig, Preamble,
    MAX_CONTROL_MESSAGE,
};
use concord_net::tls::{client_config, server_name, FingerprintPredicate, Identity, TlsConfig, TlsPeer, TlsTransport};
use concord_net::{hex, NetError, Transport};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

const SID_A: [u8; 16] = *b"routed-session-A";
const SID_B: [u8; 16] = *b"routed-session-B";
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

mod common;
use common::{bounded, bytes};

async fn port() -> PeerPort {
    port_with(PeerPortConfig::default()).await
}

async fn port_with(cfg: PeerPortConfig) -> PeerPort {
    PeerPort::start_with(TcpListener::bind("127.0.0.1:0").await.unwrap(), cfg).unwrap()
}

struct Nodes {
    ids: Vec<Identity>,
    ports: Vec<PeerPort>,
    peers: Vec<TlsPeer>,
}

async fn nodes(n: usize) -> Nodes {
    let ids: Vec<Identity> = (0..n).map(|i| Identity::generate(&format!("node-{i}")).unwrap()).collect();
    let mut ports = Vec::new();
    for _ in 0..n {
        ports.push(port().await);
    }
    let peers =
        ids.iter().zip(&ports).map(|(id, p)| TlsPeer { addr: p.local_addr(), fingerprint: id.fingerprint() }).collect();
    Nodes { ids, ports, peers }
}

/// Party `me` of session `sid` on node `me`: register, then establish.
fn spawn_party(nodes: &Nodes, me: usize, sid: [u8; 16]) -> tokio::task::JoinHandle<Result<TlsTransport, NetError>> {
    let inbound = nodes.ports[me].register(sid).unwrap();
    let cfg = TlsConfig::new(me, nodes.ids[me].clone(), nodes.peers.clone(), sid);
    tokio::spawn(TlsTransport::establish_routed(cfg, inbound))
}

fn payload(sid: &[u8; 16], from: usize, to: usize, k: usize) -> Vec<u8> {
    let seed = u64::from(sid[15]) << 32 | (from as u64) << 16 | (to as u64) << 8 | k as u64;
    let mut m = sid.to_vec();
    m.extend_from_slice(&bytes(seed, 1000 + 7919 * k));
    m
}

/// Every party sends `count` messages to every other and checks what it receives.
async fn exchange(ts: Vec<Arc<TlsTransport>>, sid: [u8; 16], count: usize) {
    let n = ts.len();
    let mut tasks = Vec::new();
    for t in &ts {
        let t = t.clone();
        tasks.push(tokio::spawn(async move {
            let me = t.me();
            for k in 0..count {
                for to in (0..n).filter(|&j| j != me) {
                    t.send(to, payload(&sid, me, to, k)).await.unwrap();
                }
            }
            for k in 0..count {
                for from in (0..n).filter(|&j| j != me) {
                    let m = t.recv(from).await.unwrap();
                    assert_eq!(&m[..16], &sid[..], "party {me} got a message of another session from {from}");
                    assert_eq!(m, payload(&sid, from, me, k), "party {me}, message {k} from {from}");
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_sessions_share_three_peer_ports_without_mixing() {
    bounded(async {
        let nodes = nodes(3).await;
        let mut handles = Vec::new();
        // Interleave the sessions' setups so their connections race on the same ports.
        for me in [2, 0, 1] {
            handles.push((SID_A, spawn_party(&nodes, me, SID_A)));
            handles.push((SID_B, spawn_party(&nodes, me, SID_B)));
        }
        let mut a = Vec::new();
        let mut b = Vec::new();
        for (sid, h) in handles {
            let t = Arc::new(h.await.unwrap().unwrap());
            if sid == SID_A {
                a.push(t);
            } else {
                b.push(t);
            }
        }
        a.sort_by_key(|t| t.me());
        b.sort_by_key(|t| t.me());
        tokio::join!(exchange(a.clone(), SID_A, 5), exchange(b.clone(), SID_B, 5));
        for t in a.iter().chain(&b) {
            assert_eq!(t.stats().messages_sent, 10);
        }
        // The sessions are unregistered once established: the ids can be used again.
        for p in &nodes.ports {
            drop(p.register(SID_A).unwrap());
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_before_registration_is_held_and_delivered() {
    bounded(async {
        // Raw: the bytes after the preamble reach the session that registers later.
        let p = port().await;
        let mut raw = TcpStream::connect(p.local_addr()).await.unwrap();
        raw.write_all(&encode_preamble(&Preamble::Session(SID_A))).await.unwrap();
        raw.write_all(b"first bytes after the preamble").await.unwrap();
        tokio::time::sleep(Duration::from_millis(500)).await;
        let mut inbound = p.register(SID_A).unwrap();
        let mut s = tokio::time::timeout(Duration::from_secs(5), inbound.recv()).await.unwrap().unwrap();
        let mut buf = [0u8; 30];
        s.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"first bytes after the preamble");

        // Transports: the dialer (party 1) starts a second before the acceptor registers.
        let nodes = nodes(2).await;
        let dialer = spawn_party(&nodes, 1, SID_B);
        tokio::time::sleep(Duration::from_secs(1)).await;
        let acceptor = spawn_party(&nodes, 0, SID_B);
        let t1 = Arc::new(dialer.await.unwrap().unwrap());
        let t0 = Arc::new(acceptor.await.unwrap().unwrap());
        exchange(vec![t0, t1], SID_B, 2).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_connection_is_dropped_after_the_hold_time() {
    bounded(async {
        let cfg = PeerPortConfig { hold_unrouted: Duration::from_millis(300), ..PeerPortConfig::default() };
        let p = port_with(cfg).await;
        let mut raw = TcpStream::connect(p.local_addr()).await.unwrap();
        raw.write_all(&encode_preamble(&Preamble::Session(SID_A))).await.unwrap();
        // The port closes the connection once the hold time is over.
        let mut buf = [0u8; 1];
        let r = tokio::time::timeout(Duration::from_secs(5), raw.read(&mut buf)).await.unwrap();
        assert!(matches!(r, Ok(0) | Err(_)), "expected the held connection to be closed, got {r:?}");
        let mut inbound = p.register(SID_A).unwrap();
        assert!(tokio::time::timeout(Duration::from_millis(300), inbound.recv()).await.is_err());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routed_dialer_dials_again_after_its_held_connection_is_dropped() {
    bounded(async {
        let mut nodes = nodes(2).await;
        // Party 0's port holds unknown sessions' connections only briefly.
        let cfg = PeerPortConfig { hold_unrouted: Duration::from_millis(200), ..PeerPortConfig::default() };
        let p0 = port_with(cfg).await;
        nodes.peers[0].addr = p0.local_addr();
        nodes.ports[0] = p0;
        let dialer = spawn_party(&nodes, 1, SID_A);
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let acceptor = spawn_party(&nodes, 0, SID_A);
        let t0 = Arc::new(acceptor.await.unwrap().unwrap());
        let t1 = Arc::new(dialer.await.unwrap().unwrap());
        exchange(vec![t0, t1], SID_A, 2).await;
    })
    .await;
}

async fn expect_closed(mut s: TcpStream, what: &str) {
    let mut buf = [0u8; 16];
    let r = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await;
    assert!(matches!(r, Ok(Ok(0) | Err(_))), "{what}: expected the port to close the connection, got {r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_preambles_are_dropped_without_disturbing_a_session() {
    bounded(async {
        let nodes = nodes(2).await;
        let addr = nodes.ports[0].local_addr();
        // Garbage arrives before and during the session's setup.
        let mut http = TcpStream::connect(addr).await.unwrap();
        http.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
        let acceptor = spawn_party(&nodes, 0, SID_A);
        let mut wrong_version = TcpStream::connect(addr).await.unwrap();
        wrong_version.write_all(b"CONCORD\x02\x01routed-session-A").await.unwrap();
        let mut wrong_kind = TcpStream::connect(addr).await.unwrap();
        wrong_kind.write_all(b"CONCORD\x01\x07").await.unwrap();
        // Control connections are dropped while nobody takes them.
        let mut control = TcpStream::connect(addr).await.unwrap();
        control.write_all(&encode_preamble(&Preamble::Control)).await.unwrap();
        let dialer = spawn_party(&nodes, 1, SID_A);
        expect_closed(http, "HTTP request").await;
        expect_closed(wrong_version, "wrong magic").await;
        expect_closed(wrong_kind, "unknown kind").await;
        expect_closed(control, "untaken control").await;
        let t0 = Arc::new(acceptor.await.unwrap().unwrap());
        let t1 = Arc::new(dialer.await.unwrap().unwrap());
        exchange(vec![t0, t1], SID_A, 3).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_connection_is_dropped_after_the_preamble_timeout() {
    bounded(async {
        let cfg = PeerPortConfig { preamble_timeout: Duration::from_millis(200), ..PeerPortConfig::default() };
        let p = port_with(cfg).await;
        let mut partial = TcpStream::connect(p.local_addr()).await.unwrap();
        partial.write_all(b"CONCORD\x01\x01half-an-id").await.unwrap();
        let start = Instant::now();
        expect_closed(partial, "partial preamble").await;
        assert!(start.elapsed() < Duration::from_secs(3));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registration_rules_and_shutdown() {
    bounded(async {
        let p = port().await;
        let a = p.register(SID_A).unwrap();
        assert!(matches!(p.register(SID_A), Err(NetError::PeerPort(m)) if m.contains(&hex(&SID_A))));
        // A transport refuses an inbound routed for another session.
        let ids: Vec<Identity> = (0..2).map(|i| Identity::generate(&format!("n{i}")).unwrap()).collect();
        let peers = ids.iter().map(|id| TlsPeer { addr: p.local_addr(), fingerprint: id.fingerprint() }).collect();
        let cfg = TlsConfig::new(0, ids[0].clone(), peers, SID_B);
        assert!(matches!(TlsTransport::establish_routed(cfg, a).await, Err(NetError::Config(_))));
        // Dropping the inbound unregistered it.
        let mut b = p.register(SID_A).unwrap();
        assert!(p.take_control().is_some());
        assert!(p.take_control().is_none());
        let clone = p.clone();
        clone.shutdown();
        assert!(tokio::time::timeout(Duration::from_secs(1), b.recv()).await.unwrap().is_none());
        assert!(matches!(p.register(SID_B), Err(NetError::PeerPort(_))));
        // The listener closes soon after.
        let addr = p.local_addr();
        let mut closed = false;
        for _ in 0..50 {
            match TcpStream::connect(addr).await {
                Err(_) => {
                    closed = true;
                    break;
                }
                Ok(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
        assert!(closed, "the listener still accepts after shutdown");
    })
    .await;
}

// ---------------------------------------------------------------------------
// Control RPC.

fn only(fps: Vec<[u8; 32]>) -> FingerprintPredicate {
    Arc::new(move |fp: &[u8; 32]| fps.contains(fp))
}

/// A control server: every accepted request goes to the returned channel,
/// every failure to the other.
fn control_server(
    p: &PeerPort,
    id: Identity,
    allowed: FingerprintPredicate,
) -> (mpsc::UnboundedReceiver<ControlRequest>, mpsc::UnboundedReceiver<NetError>) {
    let mut conns = p.take_control().unwrap();
    let (ok_tx, ok_rx) = mpsc::unbounded_channel();
    let (err_tx, err_rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(s) = conns.recv().await {
            let (id, allowed, ok_tx, err_tx) = (id.clone(), allowed.clone(), ok_tx.clone(), err_tx.clone());
            tokio::spawn(async move {
                match control_accept(s, &id, allowed, CALL_TIMEOUT).await {
                    Ok(r) => {
                        let _ = ok_tx.send(r);
                    }
                    Err(e) => {
                        let _ = err_tx.send(e);
                    }
                }
            });
        }
    });
    (ok_rx, err_rx)
}

/// Answer each request with its bytes reversed.
fn reverse_replies(mut reqs: mpsc::UnboundedReceiver<ControlRequest>, seen: mpsc::UnboundedSender<[u8; 32]>) {
    tokio::spawn(async move {
        while let Some(r) = reqs.recv().await {
            let _ = seen.send(r.peer_fingerprint);
            let reply: Vec<u8> = r.request.iter().rev().copied().collect();
            r.reply(&reply).await.unwrap();
        }
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_call_round_trip() {
    bounded(async {
        let server = Identity::generate("server").unwrap();
        let client = Identity::generate("client").unwrap();
        let p = port().await;
        let (reqs, _errs) = control_server(&p, server.clone(), only(vec![client.fingerprint()]));
        let (seen_tx, mut seen) = mpsc::unbounded_channel();
        reverse_replies(reqs, seen_tx);
        // Host names are resolved.
        let addr = format!("localhost:{}", p.local_addr().port());
        for (k, len) in [0usize, 1, 1000, 3 << 20].into_iter().enumerate() {
            let req = bytes(k as u64, len);
            let reply = control_call(&client, &addr, server.fingerprint(), &req, CALL_TIMEOUT).await.unwrap();
            assert_eq!(reply, req.iter().rev().copied().collect::<Vec<u8>>());
            assert_eq!(seen.recv().await.unwrap(), client.fingerprint());
        }
        // Sessions and control share the port.
        let mut inbound = p.register(SID_A).unwrap();
        let mut raw = TcpStream::connect(p.local_addr()).await.unwrap();
        raw.write_all(&encode_preamble(&Preamble::Session(SID_A))).await.unwrap();
        assert!(tokio::time::timeout(Duration::from_secs(5), inbound.recv()).await.unwrap().is_some());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_call_from_unpaired_identity_fails_on_both_sides() {
    bounded(async {
        let server = Identity::generate("server").unwrap();
        let paired = Identity::generate("paired").unwrap();
        let stranger = Identity::generate("stranger").unwrap();
        let p = port().await;
        let (mut reqs, mut errs) = control_server(&p, server.clone(), only(vec![paired.fingerprint()]));
        let addr = p.local_addr().to_string();
        let r = control_call(&stranger, &addr, server.fingerprint(), b"let me in", CALL_TIMEOUT).await;
        match r {
            Err(NetError::CertificateRefused { fingerprint, addr: a, .. }) => {
                assert_eq!(fingerprint, hex(&stranger.fingerprint()));
                assert_eq!(a, addr);
            }
            other => panic!("client: expected CertificateRefused, got {other:?}"),
        }
        match errs.recv().await.unwrap() {
            NetError::UnpinnedCertificate { fingerprint, .. } => assert_eq!(fingerprint, hex(&stranger.fingerprint())),
            other => panic!("server: expected UnpinnedCertificate, got {other:?}"),
        }
        assert!(reqs.try_recv().is_err(), "the refused request must not reach the handler");
        // The paired identity still gets through.
        let (seen_tx, _seen) = mpsc::unbounded_channel();
        reverse_replies(reqs, seen_tx);
        let reply = control_call(&paired, &addr, server.fingerprint(), b"abc", CALL_TIMEOUT).await.unwrap();
        assert_eq!(reply, b"cba");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_call_to_server_with_other_fingerprint_fails() {
    bounded(async {
        let server = Identity::generate("server").unwrap();
        let expected = Identity::generate("the one we paired with").unwrap();
        let client = Identity::generate("client").unwrap();
        let p = port().await;
        let (mut reqs, mut errs) = control_server(&p, server.clone(), only(vec![client.fingerprint()]));
        let addr = p.local_addr().to_string();
        match control_call(&client, &addr, expected.fingerprint(), b"hello", CALL_TIMEOUT).await {
            Err(NetError::UnpinnedCertificate { fingerprint, .. }) => {
                assert_eq!(fingerprint, hex(&server.fingerprint()))
            }
            other => panic!("expected UnpinnedCertificate, got {other:?}"),
        }
        // The server sees a failed handshake, not a request.
        assert!(matches!(errs.recv().await.unwrap(), NetError::Tls { .. } | NetError::Io { .. }));
        assert!(reqs.try_recv().is_err());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversize_control_messages_are_refused() {
    bounded(async {
        let server = Identity::generate("server").unwrap();
        let client = Identity::generate("client").unwrap();
        let p = port().await;
        let (mut reqs, mut errs) = control_server(&p, server.clone(), only(vec![client.fingerprint()]));
        let addr = p.local_addr().to_string();
        let too_big = vec![0u8; MAX_CONTROL_MESSAGE + 1];

        // Our own request: refused before anything is sent.
        match control_call(&client, &addr, server.fingerprint(), &too_big, CALL_TIMEOUT).await {
            Err(NetError::ControlMessageTooLarge { size, limit, .. }) => {
                assert_eq!((size, limit), (MAX_CONTROL_MESSAGE + 1, MAX_CONTROL_MESSAGE));
            }
            other => panic!("expected ControlMessageTooLarge, got {other:?}"),
        }

        // An oversized reply: the server refuses to send it, the client gets no reply.
        let call = tokio::spawn({
            let (client, addr, fp) = (client.clone(), addr.clone(), server.fingerprint());
            async move { control_call(&client, &addr, fp, b"big reply please", CALL_TIMEOUT).await }
        });
        let req = reqs.recv().await.unwrap();
        assert!(matches!(req.reply(&too_big).await, Err(NetError::ControlMessageTooLarge { .. })));
        assert!(call.await.unwrap().is_err());

        // A client announcing an oversized request: the server refuses to read it.
        let mut tcp = TcpStream::connect(&addr).await.unwrap();
        tcp.write_all(&encode_preamble(&Preamble::Control)).await.unwrap();
        let connector = tokio_rustls::TlsConnector::from(client_config(&client, server.fingerprint()).unwrap());
        let mut tls = connector.connect(server_name(), tcp).await.unwrap();
        tls.write_all(&u32::try_from(MAX_CONTROL_MESSAGE + 1).unwrap().to_be_bytes()).await.unwrap();
        tls.flush().await.unwrap();
        match errs.recv().await.unwrap() {
            NetError::ControlMessageTooLarge { size, .. } => assert_eq!(size, MAX_CONTROL_MESSAGE + 1),
            other => panic!("server: expected ControlMessageTooLarge, got {other:?}"),
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_call_times_out_when_the_server_never_replies() {
    bounded(async {
        let server = Identity::generate("server").unwrap();
        let client = Identity::generate("client").unwrap();
        let p = port().await;
        let (mut reqs, _errs) = control_server(&p, server.clone(), only(vec![client.fingerprint()]));
        // Hold every request without replying.
        let held = tokio::spawn(async move {
            let mut all = Vec::new();
            while let Some(r) = reqs.recv().await {
                all.push(r);
            }
            all
        });
        let start = Instant::now();
        let r =
            control_call(&client, &p.local_addr().to_string(), server.fingerprint(), b"?", Duration::from_millis(500))
                .await;
        match r {
            Err(NetError::Io { source, .. }) => assert_eq!(source.kind(), io::ErrorKind::TimedOut),
            other => panic!("expected a timeout, got {other:?}"),
        }
        let took = start.elapsed();
        assert!(took >= Duration::from_millis(500) && took < Duration::from_secs(3), "took {took:?}");
        held.abort();
    })
    .await;
}
