//! The harness shared by the engine's integration tests.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::future::Future;
use std::time::Duration;

use concord_net::sim::{self, LinkParams, SimTransport};
use concord_net::Transport;

/// Run one future per party, each on its own thread and current-thread runtime.
pub fn run_parties<T, F, Fut, O>(nets: Vec<T>, f: F) -> Vec<O>
where
    T: Transport,
    F: Fn(T) -> Fut + Send + Sync + Clone + 'static,
    Fut: Future<Output = O>,
    O: Send + 'static,
{
    let handles: Vec<_> = nets
        .into_iter()
        .map(|net| {
            let f = f.clone();
            std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
                rt.block_on(f(net))
            })
        })
        .collect();
    handles.into_iter().map(|h| h.join().unwrap()).collect()
}

/// An ideal simulated network of `n` parties (seed 1, 20 s receive timeout).
pub fn net(n: usize) -> Vec<SimTransport> {
    sim::network(n, LinkParams { recv_timeout: Duration::from_secs(20), ..LinkParams::default() }, 1).unwrap()
}
