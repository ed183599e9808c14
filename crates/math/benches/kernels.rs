//! Field kernels: multiply-adds per second per core.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use concord_math::{batch, Ring, M127, M61, Z64};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha12Rng;

fn kernels<R: Ring>(c: &mut Criterion) {
    let n = 1 << 16;
    let mut rng = ChaCha12Rng::seed_from_u64(1);
    let mut a = vec![R::ZERO; n];
    let mut b = vec![R::ZERO; n];
    R::fill_random(&mut rng, &mut a);
    R::fill_random(&mut rng, &mut b);
    let mut g = c.benchmark_group(R::NAME);
    g.throughput(Throughput::Elements(n as u64));
    g.bench_function(BenchmarkId::new("mul_add", n), |bn| {
        let mut acc = vec![R::ZERO; n];
        bn.iter(|| batch::mul_add(&mut acc, &a, &b))
    });
    g.bench_function(BenchmarkId::new("mul", n), |bn| bn.iter(|| batch::mul(&a, &b)));
    g.bench_function(BenchmarkId::new("inner_product", n), |bn| bn.iter(|| batch::inner_product(&a, &b)));
    g.bench_function(BenchmarkId::new("random", n), |bn| {
        let mut out = vec![R::ZERO; n];
        bn.iter(|| R::fill_random(&mut rng, &mut out))
    });
    g.bench_function(BenchmarkId::new("decode", n), |bn| {
        let bytes = batch::encode(&a);
        bn.iter(|| batch::decode::<R>(&bytes))
    });
    g.finish();
}

fn all(c: &mut Criterion) {
    kernels::<M61>(c);
    kernels::<M127>(c);
    kernels::<Z64>(c);
}

criterion_group!(benches, all);
criterion_main!(benches);
