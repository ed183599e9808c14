#!/usr/bin/env bash
# Nonlinear protocols, Concord vs MPyC, same machine, one run (issue 5 figures).
#   usage: bench/nonlinear/run.sh [RUNS]      (RUNS concord repetitions per workload, default 5)
# Concord: 3 parties as 3 OS processes over loopback TLS (the replicated engine).
# MPyC: 3 parties as 3 OS processes on localhost (-M3), SecInt(32), numpy and list modes.
# Writes bench/nonlinear/results.jsonl (one JSON line per run) and prints a summary.
set -euo pipefail
cd "$(dirname "$0")/../.."
RUNS=${1:-5}
BIN=${CONCORD:-target/release/concord}
OUT=bench/nonlinear/results.jsonl
: > "$OUT"
[ -x "$BIN" ] || cargo build --release --locked
echo "load: $(cut -d' ' -f1-3 /proc/loadavg)"
[ -n "${MPYC_ONLY:-}" ] || for spec in "cmp 100000" "eq 100000" "max 10000" "min 10000" "median 10000" "div 10000" "sqrt 10000"; do
  set -- $spec
  for _ in $(seq "$RUNS"); do
    "$BIN" bench "$1" --size "$2" --json | python3 -c "import json,sys; d=json.load(sys.stdin); d['tool']='concord'; print(json.dumps(d))" >> "$OUT"
  done
done
[ -n "${MPYC_ONLY:-}" ] || python3 - "$OUT" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
by = {}
for r in rows:
    by.setdefault((r['workload'], r['size']), []).append(r)
print("| workload | N | online s (median, min-max) | preprocessing s | ops/s | rounds | bytes/party/op | correct |")
print("|---|---|---|---|---|---|---|---|")
for (w, n), rs in by.items():
    on = sorted(r['online_seconds'] for r in rs)
    pre = statistics.median(r['preprocessing_seconds'] for r in rs)
    med = statistics.median(on)
    print(f"| {w} | {n} | {med:.4f} ({on[0]:.4f}-{on[-1]:.4f}) | {pre:.4f} | {n/med:,.0f} | {rs[0]['rounds']} | {rs[0]['bytes_sent_per_op']:.2f} | {all(r['correct'] for r in rs)} |")
PY
if python3 -c "import mpyc" 2>/dev/null; then
  for spec in ${MPYC_SPECS:-"cmp.py:100000:--mode:np" "cmp.py:100000:--mode:list" "order.py:10000:--workload:max" "order.py:10000:--workload:median"}; do
    spec=${spec//:/ }
    set -- $spec
    P=$1; shift
    echo "mpyc $P $*"
    PROG=$P bench/mpyc/run.sh "$@" | sed -n 1p | tee -a "$OUT"
  done
else
  echo "MPyC is not installed (pip install mpyc gmpy2 numpy): skipping the baseline"
fi
