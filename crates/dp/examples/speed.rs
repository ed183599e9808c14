//! Samples per second of each exact sampler:
//! `cargo run -p concord-dp --example speed --release [-- samples]`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Instant;

use concord_dp::Mechanism;
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;

fn main() {
    let n: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(1_000_000);
    let mut rng = ChaCha20Rng::seed_from_u64(1);
    for m in [
        Mechanism::discrete_laplace(1.0).unwrap(),
        Mechanism::laplace_for(0.75, 120.0).unwrap(),
        Mechanism::discrete_laplace(1e6).unwrap(),
        Mechanism::discrete_gaussian(1.0).unwrap(),
        Mechanism::gaussian_for_rho(0.5, 120.0).unwrap(),
        Mechanism::discrete_gaussian(1e6).unwrap(),
    ] {
        let s = m.sampler().unwrap();
        let start = Instant::now();
        let mut acc = 0i64;
        for _ in 0..n {
            acc = acc.wrapping_add(s.sample(&mut rng).unwrap());
        }
        let secs = start.elapsed().as_secs_f64();
        println!("{m:?}: {n} samples in {secs:.2} s = {:.0} samples/s (checksum {acc})", n as f64 / secs);
    }
}
