#!/usr/bin/env bash
# Reproduces the figures of BENCHMARKS.md on this machine: Concord and MPyC
# side by side, one after the other, nothing else running.
# Usage: bench/run-all.sh [OUT_DIR]   (MPyC needs `pip install mpyc gmpy2 numpy`)
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-bench/results}
mkdir -p "$out"
cargo build --release --locked
C=./target/release/concord
runs=${RUNS:-5}
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2), $(free -g | awk '/Mem/{print $2}') GiB" | tee "$out/machine.txt"
: > "$out/concord.jsonl"
for t in tls sim; do
  for d in m61 m127 z64; do
    for i in $(seq "$runs"); do
      $C bench mul --size 1000000 --transport $t --domain $d --json | tee -a "$out/concord.jsonl"
    done
  done
done
for w in inner-product sum open; do
  $C bench $w --size 1000000 --transport tls --json | tee -a "$out/concord.jsonl"
done
: > "$out/sweep.jsonl"
for lat in 0 1 10 50; do
  for bw in 10000 1000 100; do
    $C bench mul --size 100000 --transport sim --latency-ms $lat --bandwidth-mbps $bw --json | tee -a "$out/sweep.jsonl"
  done
done
for loss in 0.001 0.01 0.05; do
  $C bench mul --size 100000 --transport sim --latency-ms 10 --bandwidth-mbps 1000 --loss $loss --json | tee -a "$out/sweep.jsonl"
done
for n in 5 7 9; do
  t=$(( (n - 1) / 2 ))
  $C bench mul --size 1000000 --parties $n --threshold $t --transport tls --json | tee -a "$out/concord.jsonl"
done
if python3 -c 'import mpyc' 2>/dev/null; then
  : > "$out/mpyc.txt"
  for i in 1 2; do bench/mpyc/run.sh 1000000 --mode np 2>&1 | tee -a "$out/mpyc.txt"; done
  bench/mpyc/run.sh 1000000 --mode list 2>&1 | tee -a "$out/mpyc.txt"
fi
