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
