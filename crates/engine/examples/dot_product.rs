//! Writing your own protocol on the engine: three parties compute the dot
//! product of two private vectors (one held by party 0, one by party 1) and
//! reveal it to party 2 only, over the simulated network.
//!
//! Run: `cargo run -p concord-engine --example dot_product`
//!
//! Swap `sim::network` for `concord_net::tls::TlsTransport::establish` to run
//! the same code across machines; nothing else changes.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use concord_engine::{EngineError, Mpc, ShamirEngine};
use concord_math::encoding::{decode_signed, encode_signed};
use concord_math::M61;
use concord_net::sim::{self, LinkParams};
use concord_net::Transport;
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha12Rng;

/// Party 0's private vector (say, prices) and party 1's (say, quantities).
const PRICES: [i64; 4] = [120, -35, 80, 14];
const QUANTITIES: [i64; 4] = [3, 10, 2, 7];

async fn party<T: Transport>(net: T) -> Result<Option<i128>, EngineError> {
    let me = net.me();
    // Each party brings its own randomness; a seeded RNG keeps the example reproducible.
    let mut rng = ChaCha12Rng::seed_from_u64(1000 + me as u64);
    // Threshold 1 of 3: no single party learns anything but its output.
    let mut mpc = ShamirEngine::<M61, _>::new(net, 1, &mut rng).await?;

    let encode = |v: &[i64]| -> Result<Vec<M61>, EngineError> {
        v.iter().map(|&x| Ok(encode_signed::<M61>(x as i128)?)).collect()
    };
    let prices = encode(&PRICES)?;
    let quantities = encode(&QUANTITIES)?;

    // 1. Each owner secret-shares its vector; the others pass None.
    let x = mpc.input(0, (me == 0).then_some(&prices[..]), PRICES.len()).await?;
    let y = mpc.input(1, (me == 1).then_some(&quantities[..]), QUANTITIES.len()).await?;
    // 2. One round: local products, then degree reduction of their sum.
    let dot = mpc.inner_product(&x, &y).await?;
    // 3. Reveal to party 2 only.
    let result = mpc.open_to(2, &dot).await?;
    // 4. Everyone confirms completion (or learns of an abort).
    mpc.finish().await?;
    Ok(result.and_then(|v| v.first().map(|r| decode_signed(*r))))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let nets = sim::network(3, LinkParams::default(), 7)?;
    let handles: Vec<_> = nets
        .into_iter()
        .map(|net| {
            std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread().enable_time().build()?;
                rt.block_on(party(net)).map_err(|e| std::io::Error::other(e.to_string()))
            })
        })
        .collect();
    for (p, h) in handles.into_iter().enumerate() {
        let out = h.join().map_err(|_| "party panicked")??;
        match out {
            Some(v) => println!("party {p} learns the dot product: {v}"),
            None => println!("party {p} learns nothing"),
        }
    }
    let plain: i64 = PRICES.iter().zip(QUANTITIES).map(|(a, b)| a * b).sum();
    println!("plaintext check: {plain}");
    Ok(())
}
