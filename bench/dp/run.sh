#!/usr/bin/env bash
# The cost of differential privacy in a whole `concord run`: the same queries
# exact and with `--epsilon 1` (every party samples one noise value per cell
# and the field becomes GF(2^127-1)), on ROWS rows over PARTIES parties; the
# figure is the secure part as `concord run` reports it (stats.seconds), median.
# Usage: bench/dp/run.sh [ROWS] [PARTIES] [REPEATS]
set -euo pipefail
cd "$(dirname "$0")/../.."
rows=${1:-1000000}; parties=${2:-3}; repeats=${3:-5}
dir=$(mktemp -d /tmp/concord-dp.XXXXXX)
trap 'rm -rf "$dir"' EXIT
python3 bench/analytics/gen.py "$rows" "$parties" "$dir"
cargo build --release --locked -q
args=(--schema "$dir/schema.toml")
for p in $(seq 0 $((parties - 1))); do args+=(--party "p$p=$dir/party$p.csv"); done
median() { sort -n | awk '{a[NR]=$1} END {print (NR % 2 ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2)}'; }
for sql in \
  "SELECT COUNT(*), AVG(age) FROM patients" \
  "SELECT sex, COUNT(*), AVG(bmi), AVG(systolic_bp) FROM patients WHERE age >= 50 GROUP BY sex" \
  "SELECT HISTOGRAM(age, 18, 98, 80) FROM patients"; do
  for mode in exact dp; do
    # DP runs without the input check; so does the exact run, for the same work apart from the noise.
    extra=(--input-check off); [ "$mode" = dp ] && extra=(--epsilon 1)
    times=$(for _ in $(seq "$repeats"); do
      "${CARGO_TARGET_DIR:-target}/release/concord" run "${args[@]}" --sql "$sql" --format json "${extra[@]}" \
        | python3 -c 'import json,sys; print(json.load(sys.stdin)["stats"]["seconds"])'
    done | median)
    echo "$mode  $times s  $sql"
  done
done
