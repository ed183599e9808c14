//! Running several parties inside one process: one OS thread and one tokio
//! runtime per party, so their arithmetic runs in parallel and no party's
//! computation blocks another's I/O.

use std::future::Future;

use anyhow::{anyhow, Result};

/// Run `f(party)` for every party on its own thread; results in party order.
pub fn run_parties<I, F, Fut, O>(inputs: Vec<I>, f: F) -> Result<Vec<O>>
where
    I: Send + 'static,
    F: Fn(I) -> Fut + Send + Sync + Clone + 'static,
    Fut: Future<Output = O>,
    O: Send + 'static,
{
    let handles: Vec<_> = inputs
        .into_iter()
        .enumerate()
        .map(|(i, input)| {
            let f = f.clone();
            std::thread::Builder::new()
                .name(format!("party-{i}"))
                .spawn(move || -> Result<O> {
                    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?;
                    Ok(rt.block_on(f(input)))
                })
                .map_err(|e| anyhow!("cannot start party thread: {e}"))
        })
        .collect::<Result<_>>()?;
    handles.into_iter().enumerate().map(|(i, h)| h.join().map_err(|_| anyhow!("party {i} panicked"))?).collect()
}

/// Peak resident set size of this process in bytes (VmHWM), if the OS tells.
pub fn peak_rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map(|kb| kb * 1024)
        .unwrap_or(0)
}

/// One party of an in-process session over loopback TLS: its identity, its
/// bound listener, and every party's address and pinned fingerprint.
pub struct LoopbackParty {
    /// Party index.
    pub me: usize,
    identity: concord_net::tls::Identity,
    listener: std::net::TcpListener,
    peers: Vec<concord_net::tls::TlsPeer>,
    session_id: [u8; 16],
}

/// Fresh identities and 127.0.0.1 listeners for `n` parties, so that every
/// party knows every address and fingerprint before any connects.
pub fn loopback_parties(n: usize, name: &str) -> Result<Vec<LoopbackParty>> {
    use anyhow::Context;
    use rand_chacha::rand_core::{RngCore, SeedableRng};
    let mut identities = Vec::with_capacity(n);
    let mut listeners = Vec::with_capacity(n);
    let mut peers = Vec::with_capacity(n);
    for i in 0..n {
        let identity = concord_net::tls::Identity::generate(&format!("{name}-{i}"))
            .map_err(|e| anyhow!("party {i}: cannot create its TLS identity: {e}"))?;
        let listener = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.set_nonblocking(true).map(|()| l))
            .with_context(|| format!("party {i}: cannot listen on 127.0.0.1"))?;
        let addr = listener.local_addr()?;
        peers.push(concord_net::tls::TlsPeer { addr, fingerprint: identity.fingerprint() });
        identities.push(identity);
        listeners.push(listener);
    }
    let mut session_id = [0u8; 16];
    rand_chacha::ChaCha12Rng::from_os_rng().fill_bytes(&mut session_id);
    Ok(identities
        .into_iter()
        .zip(listeners)
        .enumerate()
        .map(|(me, (identity, listener))| LoopbackParty { me, identity, listener, peers: peers.clone(), session_id })
        .collect())
}

impl LoopbackParty {
    /// Connect to every other party (inside the party's own runtime).
    pub async fn connect(self, timeout: std::time::Duration) -> Result<concord_net::tls::TlsTransport> {
        use anyhow::Context;
        let me = self.me;
        let listener = tokio::net::TcpListener::from_std(self.listener).context("registering the listener")?;
        let mut cfg = concord_net::tls::TlsConfig::new(me, self.identity, self.peers, self.session_id);
        cfg.recv_timeout = timeout;
        cfg.connect_timeout = timeout;
        concord_net::tls::TlsTransport::establish(cfg, listener)
            .await
            .map_err(|e| anyhow!("party {me}: TLS connection setup: {e}"))
    }
}
