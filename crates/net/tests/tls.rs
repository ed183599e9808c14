//! Integration tests of the TLS transport, all on 127.0.0.1 with port 0.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use concord_net::tls::{client_config, server_config, server_name, Identity, TlsConfig, TlsPeer, TlsTransport};
use concord_net::{hex, NetError, Transport};
use concord_wire::{
    decode_header, decode_hello, encode_header, encode_hello, FrameHeader, FrameKind, Hello, WireError, HEADER_LEN,
    HELLO_LEN,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const SID: [u8; 16] = *b"concord-test-sid";

mod common;
use common::{bounded, bytes};

struct Setup {
    ids: Vec<Identity>,
    listeners: Vec<TcpListener>,
    peers: Vec<TlsPeer>,
}

async fn setup(n: usize) -> Setup {
    let ids: Vec<Identity> = (0..n).map(|i| Identity::generate(&format!("party-{i}")).unwrap()).collect();
    let mut listeners = Vec::new();
    for _ in 0..n {
        listeners.push(TcpListener::bind("127.0.0.1:0").await.unwrap());
    }
    let peers = ids
        .iter()
        .zip(&listeners)
        .map(|(id, l)| TlsPeer { addr: l.local_addr().unwrap(), fingerprint: id.fingerprint() })
        .collect();
    Setup { ids, listeners, peers }
}

fn config(s: &Setup, me: usize) -> TlsConfig {
    let mut c = TlsConfig::new(me, s.ids[me].clone(), s.peers.clone(), SID);
    c.connect_timeout = Duration::from_secs(10);
    c.recv_timeout = Duration::from_secs(20);
    c
}

/// Establish all parties concurrently.
async fn establish_all(cfgs: Vec<TlsConfig>, listeners: Vec<TcpListener>) -> Vec<Result<TlsTransport, NetError>> {
    let handles: Vec<_> =
        cfgs.into_iter().zip(listeners).map(|(c, l)| tokio::spawn(TlsTransport::establish(c, l))).collect();
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.unwrap());
    }
    out
}

async fn network(n: usize, tweak: impl Fn(&mut TlsConfig)) -> Vec<Arc<TlsTransport>> {
    let s = setup(n).await;
    let cfgs = (0..n)
        .map(|i| {
            let mut c = config(&s, i);
            tweak(&mut c);
            c
        })
        .collect();
    establish_all(cfgs, s.listeners).await.into_iter().map(|r| Arc::new(r.unwrap())).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_parties_exchange_in_order_and_count_bytes() {
    bounded(async {
        let net = network(3, |_| {}).await;
        const K: usize = 5;
        let msg = |from: usize, to: usize, k: usize| bytes((from * 100 + to * 10 + k) as u64, 1000 * k + from);
        // Every party sends K messages to every other party, then receives.
        let mut tasks = Vec::new();
        for t in &net {
            let t = t.clone();
            tasks.push(tokio::spawn(async move {
                let me = t.me();
                for to in (0..3).filter(|&j| j != me) {
                    for k in 0..K {
                        t.send(to, msg(me, to, k)).await.unwrap();
                    }
                }
                for from in (0..3).filter(|&j| j != me) {
                    for k in 0..K {
                        assert_eq!(t.recv(from).await.unwrap(), msg(from, me, k), "{from} -> {me} #{k}");
                    }
                }
            }));
        }
        for h in tasks {
            h.await.unwrap();
        }
        // A 20 MB message, several frames, arrives intact.
        let big = bytes(42, 20_000_000);
        net[2].send(0, big.clone()).await.unwrap();
        let got = net[0].recv(2).await.unwrap();
        assert!(got == big, "20 MB message corrupted");

        let per_party_sent = |me: usize| -> u64 {
            (0..3).filter(|&j| j != me).map(|to| (0..K).map(|k| msg(me, to, k).len() as u64).sum::<u64>()).sum()
        };
        let per_party_recv = |me: usize| -> u64 {
            (0..3).filter(|&j| j != me).map(|from| (0..K).map(|k| msg(from, me, k).len() as u64).sum::<u64>()).sum()
        };
        for (i, t) in net.iter().enumerate() {
            let s = t.stats();
            let extra_sent = if i == 2 { big.len() as u64 } else { 0 };
            let extra_recv = if i == 0 { big.len() as u64 } else { 0 };
            assert_eq!(s.payload_bytes_sent, per_party_sent(i) + extra_sent, "party {i}");
            assert_eq!(s.payload_bytes_received, per_party_recv(i) + extra_recv, "party {i}");
            assert_eq!(s.messages_sent, (2 * K) as u64 + u64::from(i == 2), "party {i}");
            // The same bytes, per destination.
            let to: Vec<u64> = (0..3)
                .map(|j| {
                    let own = if j == i { 0 } else { (0..K).map(|k| msg(i, j, k).len() as u64).sum::<u64>() };
                    own + if (i, j) == (2, 0) { big.len() as u64 } else { 0 }
                })
                .collect();
            assert_eq!(t.traffic().payload_sent(), to, "party {i}");
            // Framing (28 bytes per frame) and TLS records come on top.
            let frames = (2 * K) as u64 + if i == 2 { 20 } else { 0 };
            assert!(s.wire_bytes_sent >= s.payload_bytes_sent + 28 * frames, "party {i}: {s:?}");
            assert!(s.wire_bytes_received > s.payload_bytes_received, "party {i}: {s:?}");
        }
        // Sending to ourselves or a non-party is refused.
        assert!(matches!(net[0].send(0, vec![1]).await, Err(NetError::NoSuchPeer { .. })));
        assert!(matches!(net[0].recv(3).await, Err(NetError::NoSuchPeer { .. })));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unpinned_client_certificate_is_refused() {
    bounded(async {
        let s = setup(2).await;
        let intruder = Identity::generate("intruder").unwrap();
        let intruder_fp = hex(&intruder.fingerprint());
        let mut c0 = config(&s, 0);
        c0.connect_timeout = Duration::from_secs(2);
        let mut c1 = config(&s, 1);
        c1.identity = intruder; // party 1 presents a certificate party 0 has not pinned
        c1.connect_timeout = Duration::from_secs(2);
        let start = Instant::now();
        let r = establish_all(vec![c0, c1], s.listeners).await;
        assert!(start.elapsed() < Duration::from_secs(8), "took {:?}", start.elapsed());
        match &r[0] {
            Err(NetError::UnpinnedCertificate { fingerprint, addr }) => {
                assert_eq!(fingerprint, &intruder_fp);
                assert!(addr.starts_with("127.0.0.1:"), "{addr}");
            }
            other => panic!("honest party: expected UnpinnedCertificate, got {other:?}"),
        }
        match &r[1] {
            Err(NetError::Tls { reason, .. }) => assert!(reason.contains(&intruder_fp), "{reason}"),
            other => panic!("intruder: expected a Tls error naming its fingerprint, got {other:?}"),
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unpinned_server_certificate_is_refused_by_dialer() {
    bounded(async {
        let s = setup(2).await;
        let impostor = Identity::generate("impostor").unwrap();
        let impostor_fp = hex(&impostor.fingerprint());
        let mut c0 = config(&s, 0);
        c0.identity = impostor; // party 0 listens with a certificate party 1 has not pinned
        c0.connect_timeout = Duration::from_secs(2);
        let mut c1 = config(&s, 1);
        c1.connect_timeout = Duration::from_secs(2);
        let r = establish_all(vec![c0, c1], s.listeners).await;
        match &r[1] {
            Err(NetError::UnpinnedCertificate { fingerprint, .. }) => {
                assert_eq!(fingerprint, &impostor_fp)
            }
            other => panic!("dialer: expected UnpinnedCertificate, got {other:?}"),
        }
        assert!(r[0].is_err(), "impostor must not establish");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_session_id_is_refused() {
    bounded(async {
        let s = setup(2).await;
        let c0 = config(&s, 0);
        let mut c1 = config(&s, 1);
        c1.session_id = [0xAB; 16];
        let r = establish_all(vec![c0, c1], s.listeners).await;
        match &r[0] {
            Err(NetError::WrongSession { peer, got, expected }) => {
                assert_eq!(*peer, 1);
                assert_eq!(got, &hex(&[0xAB; 16]));
                assert_eq!(expected, &hex(&SID));
            }
            other => panic!("acceptor: expected WrongSession, got {other:?}"),
        }
        match &r[1] {
            Err(NetError::WrongSession { peer, got, .. }) => {
                assert_eq!(*peer, 0);
                assert_eq!(got, &hex(&SID));
            }
            other => panic!("dialer: expected WrongSession, got {other:?}"),
        }
    })
    .await;
}

/// Party 0 is a real transport; the test plays party 1 with a raw TLS client.
async fn raw_party1(
    max_frame_payload: usize,
) -> (tokio::task::JoinHandle<Result<TlsTransport, NetError>>, tokio_rustls::client::TlsStream<TcpStream>) {
    let mut s = setup(2).await;
    let mut c0 = config(&s, 0);
    c0.max_frame_payload = max_frame_payload;
    c0.connect_timeout = Duration::from_secs(5);
    let addr: SocketAddr = s.peers[0].addr;
    let l0 = s.listeners.remove(0);
    let party0 = tokio::spawn(TlsTransport::establish(c0, l0));
    let cfg = client_config(&s.ids[1], s.peers[0].fingerprint).unwrap();
    let tcp = TcpStream::connect(addr).await.unwrap();
    let tls = tokio_rustls::TlsConnector::from(cfg).connect(server_name(), tcp).await.unwrap();
    (party0, tls)
}

async fn raw_hello(tls: &mut tokio_rustls::client::TlsStream<TcpStream>) {
    let h = FrameHeader::new(FrameKind::Hello, SID, HELLO_LEN as u32);
    tls.write_all(&encode_header(&h)).await.unwrap();
    tls.write_all(&encode_hello(&Hello { party: 1, parties: 2 })).await.unwrap();
    tls.flush().await.unwrap();
    let mut reply = [0u8; HEADER_LEN + HELLO_LEN];
    tls.read_exact(&mut reply).await.unwrap();
    let h = decode_header(&reply, 1 << 20).unwrap();
    assert_eq!(h.kind, FrameKind::Hello);
    assert_eq!(decode_hello(&reply[HEADER_LEN..]).unwrap(), Hello { party: 0, parties: 2 });
}

/// After a bad frame party 0 drops the connection: we see EOF or an error, promptly.
async fn expect_dropped(tls: &mut tokio_rustls::client::TlsStream<TcpStream>) {
    let mut buf = vec![0u8; 4096];
    let r = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match tls.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {} // e.g. a Close frame
            }
        }
    })
    .await;
    assert!(r.is_ok(), "connection was not dropped");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_instead_of_hello_is_bad_frame() {
    bounded(async {
        let (party0, mut tls) = raw_party1(1 << 20).await;
        tls.write_all(&bytes(7, 64)).await.unwrap();
        tls.flush().await.unwrap();
        match party0.await.unwrap() {
            Err(NetError::BadFrame { peer: 1, source: WireError::BadMagic { .. } }) => {}
            other => panic!("expected BadFrame from party 1, got {other:?}"),
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_after_hello_is_bad_frame_naming_peer() {
    bounded(async {
        let (party0, mut tls) = raw_party1(1 << 20).await;
        raw_hello(&mut tls).await;
        let t0 = party0.await.unwrap().unwrap();
        // One good message, then garbage.
        for (h, chunk) in concord_wire::message_frames(SID, b"hello", 1 << 20) {
            tls.write_all(&h).await.unwrap();
            tls.write_all(chunk).await.unwrap();
        }
        let mut garbage = bytes(9, 100);
        garbage[0] = b'X';
        tls.write_all(&garbage).await.unwrap();
        tls.flush().await.unwrap();
        assert_eq!(t0.recv(1).await.unwrap(), b"hello");
        let e = t0.recv(1).await.unwrap_err();
        assert!(matches!(e, NetError::BadFrame { peer: 1, source: WireError::BadMagic { .. } }), "{e:?}");
        assert!(e.to_string().contains("party 1"), "{e}");
        // The error sticks, and the connection is dropped.
        assert!(matches!(t0.recv(1).await, Err(NetError::BadFrame { peer: 1, .. })));
        expect_dropped(&mut tls).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_frame_is_refused() {
    bounded(async {
        let max = 64 * 1024;
        let (party0, mut tls) = raw_party1(max).await;
        raw_hello(&mut tls).await;
        let t0 = party0.await.unwrap().unwrap();
        let h = FrameHeader::new(FrameKind::Data, SID, (max + 1) as u32);
        tls.write_all(&encode_header(&h)).await.unwrap();
        tls.flush().await.unwrap();
        match t0.recv(1).await {
            Err(NetError::BadFrame { peer: 1, source: WireError::OversizedFrame { len, max: m } }) => {
                assert_eq!(len, (max + 1) as u64);
                assert_eq!(m, max);
            }
            other => panic!("expected an oversized-frame error, got {other:?}"),
        }
        expect_dropped(&mut tls).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_message_is_refused_both_ways() {
    bounded(async {
        let net = network(2, |c| {
            c.max_message = 1000;
            c.max_frame_payload = 300;
        })
        .await;
        assert!(matches!(
            net[0].send(1, vec![0; 1001]).await,
            Err(NetError::MessageTooLarge { peer: 1, size: 1001, limit: 1000 })
        ));
        net[0].send(1, vec![5; 1000]).await.unwrap();
        assert_eq!(net[1].recv(0).await.unwrap(), vec![5; 1000]);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_peer_times_out() {
    bounded(async {
        let net = network(2, |c| c.recv_timeout = Duration::from_millis(300)).await;
        let start = Instant::now();
        match net[0].recv(1).await {
            Err(NetError::Timeout { peer: 1, after }) => {
                assert_eq!(after, Duration::from_millis(300))
            }
            other => panic!("expected Timeout, got {other:?}"),
        }
        let took = start.elapsed();
        assert!(took >= Duration::from_millis(300) && took < Duration::from_secs(3), "{took:?}");
        // The link still works afterwards.
        net[1].send(0, vec![1, 2, 3]).await.unwrap();
        assert_eq!(net[0].recv(1).await.unwrap(), vec![1, 2, 3]);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abort_reaches_every_peer() {
    bounded(async {
        let net = network(3, |c| c.recv_timeout = Duration::from_secs(5)).await;
        net[2].abort("x").await;
        for (i, t) in net.iter().enumerate().take(2) {
            match t.recv(2).await {
                Err(NetError::PeerAborted { peer: 2, reason }) => assert_eq!(reason, "x"),
                other => panic!("party {i}: expected PeerAborted, got {other:?}"),
            }
        }
        // Every later receive, from any peer, reports the abort.
        match net[1].recv(0).await {
            Err(NetError::PeerAborted { peer: 2, reason }) => assert_eq!(reason, "x"),
            other => panic!("expected PeerAborted for recv from another peer, got {other:?}"),
        }
        assert!(matches!(net[0].recv(2).await, Err(NetError::PeerAborted { peer: 2, .. })));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_peer_is_disconnected_after_its_last_message() {
    bounded(async {
        let mut net = network(2, |c| c.recv_timeout = Duration::from_secs(5)).await;
        let t1 = net.pop().unwrap();
        let t0 = net.pop().unwrap();
        t1.send(0, b"last words".to_vec()).await.unwrap();
        drop(t1);
        assert_eq!(t0.recv(1).await.unwrap(), b"last words");
        match t0.recv(1).await {
            Err(NetError::Disconnected { peer: 1, .. }) => {}
            other => panic!("expected Disconnected, got {other:?}"),
        }
        assert!(matches!(t0.recv(1).await, Err(NetError::Disconnected { peer: 1, .. })));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parties_starting_late_still_connect() {
    bounded(async {
        let s = setup(3).await;
        let cfgs: Vec<TlsConfig> = (0..3).map(|i| config(&s, i)).collect();
        let mut handles = Vec::new();
        // Start the dialers first; the listeners' owners come up 300 ms later.
        for (i, (c, l)) in cfgs.into_iter().zip(s.listeners).enumerate().rev() {
            handles.push(tokio::spawn(async move {
                if i < 2 {
                    tokio::time::sleep(Duration::from_millis(300)).await;
                }
                TlsTransport::establish(c, l).await
            }));
        }
        let mut ts = Vec::new();
        for h in handles {
            ts.push(h.await.unwrap().unwrap());
        }
        ts.reverse();
        ts[0].send(2, vec![9; 10]).await.unwrap();
        assert_eq!(ts[2].recv(0).await.unwrap(), vec![9; 10]);
    })
    .await;
}

/// One raw TLS handshake with the transport's rustls configurations; returns
/// whether the server side and the client side succeeded.
async fn handshake(server: &Identity, allowed: &[[u8; 32]], client: &Identity, pin: [u8; 32]) -> (bool, bool) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let scfg = server_config(server, allowed).unwrap();
    let srv = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        match tokio_rustls::TlsAcceptor::from(scfg).accept(tcp).await {
            // In TLS 1.3 the server verifies the client certificate last.
            Ok(mut s) => s.write_all(b"ok").await.and(s.flush().await).is_ok(),
            Err(_) => false,
        }
    });
    let tcp = TcpStream::connect(addr).await.unwrap();
    let cli =
        match tokio_rustls::TlsConnector::from(client_config(client, pin).unwrap()).connect(server_name(), tcp).await {
            Ok(mut s) => {
                let mut b = [0u8; 2];
                s.read_exact(&mut b).await.is_ok() && &b == b"ok"
            }
            Err(_) => false,
        };
    (srv.await.unwrap(), cli)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_layer_accepts_only_pinned_certificates() {
    bounded(async {
        let server = Identity::generate("server").unwrap();
        let client = Identity::generate("client").unwrap();
        let intruder = Identity::generate("intruder").unwrap();
        let sfp = server.fingerprint();
        let allowed = [client.fingerprint()];
        assert_eq!(handshake(&server, &allowed, &client, sfp).await, (true, true));
        // Client certificate not pinned by the server.
        assert_eq!(handshake(&server, &allowed, &intruder, sfp).await, (false, false));
        // Server certificate not the one the client pinned.
        assert_eq!(handshake(&server, &allowed, &client, intruder.fingerprint()).await, (false, false));
    })
    .await;
}

#[test]
fn identity_pem_roundtrip_and_redaction() {
    let id = Identity::generate("party-0").unwrap();
    let back = Identity::from_pem(&id.cert_pem(), &id.key_pem()).unwrap();
    assert_eq!(back.fingerprint(), id.fingerprint());
    assert!(id.cert_pem().starts_with("-----BEGIN CERTIFICATE-----\n"));
    // A key that does not belong to the certificate is refused.
    let other = Identity::generate("party-1").unwrap();
    assert!(matches!(Identity::from_pem(&id.cert_pem(), &other.key_pem()), Err(NetError::Config(_))));
    assert!(Identity::from_pem("garbage", &id.key_pem()).is_err());
    // Debug never shows the key.
    let dbg = format!("{id:?}");
    let key_body: String = id.key_pem().lines().nth(1).unwrap().chars().take(20).collect();
    assert!(!dbg.contains(&key_body), "{dbg}");
    assert!(dbg.contains("redacted"), "{dbg}");
    assert!(dbg.contains(&hex(&id.fingerprint())), "{dbg}");
}

/// Throughput on loopback; run with
/// `cargo test --release -p concord-net --test tls -- --ignored --nocapture throughput`.
#[tokio::test(flavor = "multi_thread")]
#[ignore]
async fn throughput() {
    let net = network(2, |c| c.recv_timeout = Duration::from_secs(60)).await;
    let msg = bytes(1, 16 << 20);
    let rounds = 32;
    let start = Instant::now();
    let mut hs = Vec::new();
    for t in &net {
        let t = t.clone();
        let msg = msg.clone();
        hs.push(tokio::spawn(async move {
            let other = 1 - t.me();
            for _ in 0..rounds {
                t.send(other, msg.clone()).await.unwrap();
            }
            for _ in 0..rounds {
                assert_eq!(t.recv(other).await.unwrap().len(), msg.len());
            }
        }));
    }
    for h in hs {
        h.await.unwrap();
    }
    let secs = start.elapsed().as_secs_f64();
    let total = 2.0 * rounds as f64 * msg.len() as f64;
    println!(
        "moved {:.0} MB in {secs:.2} s: {:.2} GB/s aggregate; stats {:?}",
        total / 1e6,
        total / secs / 1e9,
        net[0].stats()
    );
}
