//! An in-process simulated network, deterministic for a seed.
//!
//! Each ordered link (i to j) has a latency, a bandwidth, a jitter bound and
//! a packet-loss probability ([`LinkParams`]). A message of b bytes is cut
//! into packets of [`LinkParams::mss`] bytes; each packet is lost
//! independently with probability `loss` and retransmitted after a
//! retransmission timeout (RTO = 2 x latency + 1 ms) until it gets through,
//! and every transmission, the lost ones included, occupies the link for
//! bytes / bandwidth. The message is delivered when its last packet arrives:
//!
//! ```text
//! start     = max(now, link busy until)
//! busy      = (b + retransmitted bytes) / bandwidth
//! delivered = max(start + busy + latency + U[0, jitter] + max_retries x RTO,
//!                 previous delivery on the link)            (links are FIFO)
//! ```
//!
//! The losses and jitter are drawn from a per-link ChaCha stream seeded by
//! (seed, i, j), so a run's delays and byte counts are the same for the same
//! seed and the same sequence of messages. The receiver sleeps until the
//! delivery instant, so protocol code sees real elapsed time; a link with
//! zero latency, infinite bandwidth and no loss delivers at once.
//!
//! Parties may live on different threads and different tokio runtimes.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha12Rng;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::{check_peer, LinkStats, NetError, PartyId, Transport};

/// Parameters of every link of a simulated network.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LinkParams {
    /// One-way propagation delay.
    pub latency: Duration,
    /// Bytes per second; `None` for unlimited.
    pub bandwidth: Option<f64>,
    /// Upper bound of the uniform extra delay added to each message.
    pub jitter: Duration,
    /// Probability that a packet is lost (each loss costs a retransmission), in `[0, 0.9]`.
    pub loss: f64,
    /// Packet payload size in bytes.
    pub mss: usize,
    /// How long `recv` waits before [`NetError::Timeout`].
    pub recv_timeout: Duration,
}

impl Default for LinkParams {
    fn default() -> Self {
        LinkParams {
            latency: Duration::ZERO,
            bandwidth: None,
            jitter: Duration::ZERO,
            loss: 0.0,
            mss: 1448,
            recv_timeout: Duration::from_secs(30),
        }
    }
}

impl LinkParams {
    fn validate(&self) -> Result<(), NetError> {
        if !(0.0..=0.9).contains(&self.loss) {
            return Err(NetError::Config(format!("packet loss {} is outside [0, 0.9]", self.loss)));
        }
        if let Some(b) = self.bandwidth {
            if !(b.is_finite() && b > 0.0) {
                return Err(NetError::Config(format!("bandwidth {b} bytes/s must be positive")));
            }
        }
        if self.mss == 0 {
            return Err(NetError::Config("packet size must be positive".into()));
        }
        Ok(())
    }

    fn is_ideal(&self) -> bool {
        self.latency.is_zero() && self.bandwidth.is_none() && self.jitter.is_zero() && self.loss == 0.0
    }
}

enum Packet {
    Data { at: Instant, payload: Vec<u8> },
    Abort(String),
}

struct LinkState {
    rng: ChaCha12Rng,
    busy_until: Instant,
    last_delivery: Instant,
}

struct Link {
    tx: mpsc::UnboundedSender<Packet>,
    state: Mutex<LinkState>,
}

/// Counters shared by the two ends of a link (wire bytes include retransmissions).
#[derive(Default)]
struct Counters {
    payload_sent: AtomicU64,
    payload_received: AtomicU64,
    wire_sent: AtomicU64,
    wire_received: AtomicU64,
    messages_sent: AtomicU64,
}

/// One party's end of a simulated network.
pub struct SimTransport {
    me: PartyId,
    n: usize,
    params: LinkParams,
    links: Vec<Option<Link>>,
    inboxes: Vec<Option<tokio::sync::Mutex<mpsc::UnboundedReceiver<Packet>>>>,
    counters: Arc<Counters>,
    wire_in: Vec<Arc<AtomicU64>>,
}

/// Build a fully connected simulated network of `n` parties; element i is party i's transport.
pub fn network(n: usize, params: LinkParams, seed: u64) -> Result<Vec<SimTransport>, NetError> {
    params.validate()?;
    if n < 2 {
        return Err(NetError::Config(format!("a network needs at least 2 parties, got {n}")));
    }
    let now = Instant::now();
    // rx[j][i]: j's inbox for messages from i.
    let mut txs: Vec<Vec<Option<mpsc::UnboundedSender<Packet>>>> =
        (0..n).map(|_| (0..n).map(|_| None).collect()).collect();
    let mut rxs: Vec<Vec<Option<tokio::sync::Mutex<mpsc::UnboundedReceiver<Packet>>>>> =
        (0..n).map(|_| (0..n).map(|_| None).collect()).collect();
    for i in 0..n {
        for j in 0..n {
            if i != j {
                let (tx, rx) = mpsc::unbounded_channel();
                txs[i][j] = Some(tx);
                rxs[j][i] = Some(tokio::sync::Mutex::new(rx));
            }
        }
    }
    // wire_in[j][i]: bytes on the wire from i to j, counted at send time.
    let wire_in: Vec<Vec<Arc<AtomicU64>>> =
        (0..n).map(|_| (0..n).map(|_| Arc::new(AtomicU64::new(0))).collect()).collect();
    let mut out = Vec::with_capacity(n);
    for (i, (tx_row, rx_row)) in txs.into_iter().zip(rxs).enumerate() {
        let links = tx_row
            .into_iter()
            .enumerate()
            .map(|(j, tx)| {
                tx.map(|tx| {
                    let mut key = [0u8; 32];
                    key[..8].copy_from_slice(&seed.to_le_bytes());
                    key[8..16].copy_from_slice(&(i as u64).to_le_bytes());
                    key[16..24].copy_from_slice(&(j as u64).to_le_bytes());
                    Link {
                        tx,
                        state: Mutex::new(LinkState {
                            rng: ChaCha12Rng::from_seed(key),
                            busy_until: now,
                            last_delivery: now,
                        }),
                    }
                })
            })
            .collect();
        out.push(SimTransport {
            me: i,
            n,
            params,
            links,
            inboxes: rx_row,
            counters: Arc::new(Counters::default()),
            wire_in: wire_in.iter().map(|row| row[i].clone()).collect(),
        });
    }
    // Re-point wire_in so that party j reads its own row.
    for (j, t) in out.iter_mut().enumerate() {
        t.wire_in = wire_in[j].clone();
    }
    Ok(out)
}

fn uniform(rng: &mut ChaCha12Rng) -> f64 {
    (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64
}

impl SimTransport {
    /// Schedule a message of `len` bytes on the link to `to`: (delivery instant, wire bytes).
    fn schedule(&self, state: &mut LinkState, len: usize) -> (Instant, u64) {
        let p = &self.params;
        let now = Instant::now();
        if p.is_ideal() {
            return (now, len as u64);
        }
        let packets = len.div_ceil(p.mss).max(1);
        let mut retransmitted = 0usize;
        let mut max_retries = 0u32;
        if p.loss > 0.0 {
            for k in 0..packets {
                let size = if k + 1 == packets { len - k * p.mss } else { p.mss };
                let mut tries = 0u32;
                while uniform(&mut state.rng) < p.loss {
                    tries += 1;
                    retransmitted += size.max(1);
                }
                max_retries = max_retries.max(tries);
            }
        }
        let wire = (len + retransmitted) as u64;
        let busy = match p.bandwidth {
            Some(bw) => Duration::from_secs_f64(wire as f64 / bw),
            None => Duration::ZERO,
        };
        let start = now.max(state.busy_until);
        state.busy_until = start + busy;
        let jitter = p.jitter.mul_f64(uniform(&mut state.rng));
        let rto = p.latency * 2 + Duration::from_millis(1);
        let at = (start + busy + p.latency + jitter + rto * max_retries).max(state.last_delivery);
        state.last_delivery = at;
        (at, wire)
    }
}

impl Transport for SimTransport {
    fn me(&self) -> PartyId {
        self.me
    }

    fn parties(&self) -> usize {
        self.n
    }

    async fn send(&self, to: PartyId, payload: Vec<u8>) -> Result<(), NetError> {
        check_peer(to, self.me, self.n)?;
        let link = self.links.get(to).and_then(Option::as_ref).ok_or(NetError::NoSuchPeer {
            party: to,
            me: self.me,
            n: self.n,
        })?;
        let len = payload.len();
        let (at, wire) = {
            let mut st = link.state.lock().map_err(|_| NetError::Config("simulated link state poisoned".into()))?;
            self.schedule(&mut st, len)
        };
        link.tx
            .send(Packet::Data { at, payload })
            .map_err(|_| NetError::Disconnected { peer: to, reason: "simulated peer has gone".into() })?;
        self.counters.payload_sent.fetch_add(len as u64, Ordering::Relaxed);
        self.counters.wire_sent.fetch_add(wire, Ordering::Relaxed);
        self.counters.messages_sent.fetch_add(1, Ordering::Relaxed);
        // The receiving side counts the same bytes when it takes the message.
        Ok(())
    }

    async fn recv(&self, from: PartyId) -> Result<Vec<u8>, NetError> {
        check_peer(from, self.me, self.n)?;
        let inbox = self.inboxes.get(from).and_then(Option::as_ref).ok_or(NetError::NoSuchPeer {
            party: from,
            me: self.me,
            n: self.n,
        })?;
        let timeout = self.params.recv_timeout;
        let deadline = Instant::now() + timeout;
        let mut rx = inbox.lock().await;
        let packet = match tokio::time::timeout_at(deadline, rx.recv()).await {
            Err(_) => return Err(NetError::Timeout { peer: from, after: timeout }),
            Ok(None) => return Err(NetError::Disconnected { peer: from, reason: "simulated peer has gone".into() }),
            Ok(Some(p)) => p,
        };
        match packet {
            Packet::Abort(reason) => Err(NetError::PeerAborted { peer: from, reason }),
            Packet::Data { at, payload } => {
                if at > deadline {
                    tokio::time::sleep_until(deadline).await;
                    return Err(NetError::Timeout { peer: from, after: timeout });
                }
                tokio::time::sleep_until(at).await;
                let len = payload.len() as u64;
                self.counters.payload_received.fetch_add(len, Ordering::Relaxed);
                if let Some(w) = self.wire_in.get(from) {
                    self.counters.wire_received.fetch_add(len, Ordering::Relaxed);
                    w.fetch_add(len, Ordering::Relaxed);
                }
                Ok(payload)
            }
        }
    }

    async fn abort(&self, reason: &str) {
        for link in self.links.iter().flatten() {
            let _ = link.tx.send(Packet::Abort(reason.to_string()));
        }
    }

    async fn shutdown(&mut self) {
        // Messages are already in the receivers' queues; dropping the
        // senders lets peers see the end after draining them.
        for link in self.links.iter_mut() {
            *link = None;
        }
    }

    fn stats(&self) -> LinkStats {
        LinkStats {
            payload_bytes_sent: self.counters.payload_sent.load(Ordering::Relaxed),
            payload_bytes_received: self.counters.payload_received.load(Ordering::Relaxed),
            wire_bytes_sent: self.counters.wire_sent.load(Ordering::Relaxed),
            wire_bytes_received: self.counters.wire_received.load(Ordering::Relaxed),
            messages_sent: self.counters.messages_sent.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread().enable_time().build().expect("runtime")
    }

    #[test]
    fn delivers_in_order_and_counts() {
        rt().block_on(async {
            let net = network(3, LinkParams::default(), 1).expect("net");
            for k in 0..5u8 {
                net[0].send(2, vec![k; 10]).await.expect("send");
            }
            for k in 0..5u8 {
                assert_eq!(net[2].recv(0).await.expect("recv"), vec![k; 10]);
            }
            assert_eq!(net[0].stats().payload_bytes_sent, 50);
            assert_eq!(net[2].stats().payload_bytes_received, 50);
            assert!(matches!(net[1].send(1, vec![]).await, Err(NetError::NoSuchPeer { .. })));
        });
    }

    #[test]
    fn latency_bandwidth_and_loss_delay_delivery_deterministically() {
        let params =
            LinkParams { latency: Duration::from_millis(20), bandwidth: Some(1e6), loss: 0.2, ..LinkParams::default() };
        let run = |seed| {
            rt().block_on(async {
                let net = network(2, params, seed).expect("net");
                let t0 = Instant::now();
                net[0].send(1, vec![0; 10_000]).await.expect("send");
                net[1].recv(0).await.expect("recv");
                (t0.elapsed(), net[0].stats().wire_bytes_sent)
            })
        };
        let (d1, w1) = run(7);
        let (_, w2) = run(7);
        let (_, w3) = run(8);
        // 10 kB at 1 MB/s is 10 ms, plus 20 ms latency, plus retransmissions.
        assert!(d1 >= Duration::from_millis(30), "{d1:?}");
        assert_eq!(w1, w2, "same seed, same retransmissions");
        assert!(w1 > 10_000, "20% loss retransmits something: {w1}");
        assert!(w1 != w3 || w1 > 10_000);
    }

    #[test]
    fn timeout_abort_and_disconnect() {
        rt().block_on(async {
            let params = LinkParams { recv_timeout: Duration::from_millis(50), ..LinkParams::default() };
            let mut net = network(3, params, 1).expect("net");
            assert!(matches!(net[0].recv(1).await, Err(NetError::Timeout { peer: 1, .. })));
            net[1].abort("operator veto").await;
            match net[0].recv(1).await {
                Err(NetError::PeerAborted { peer: 1, reason }) => assert_eq!(reason, "operator veto"),
                other => panic!("expected abort, got {other:?}"),
            }
            drop(net.remove(2));
            assert!(matches!(net[0].recv(2).await, Err(NetError::Disconnected { peer: 2, .. })));
            assert!(network(3, LinkParams { loss: 1.0, ..LinkParams::default() }, 0).is_err());
        });
    }
}
