#!/usr/bin/env bash
# Times `concord run` on ROWS rows split over PARTIES parties (default 10^6 over 3).
# Usage: bench/analytics/run.sh [ROWS] [PARTIES]
set -euo pipefail
cd "$(dirname "$0")/../.."
rows=${1:-1000000}; parties=${2:-3}
dir=$(mktemp -d /tmp/concord-analytics.XXXXXX)
python3 bench/analytics/gen.py "$rows" "$parties" "$dir"
cargo build --release --locked -q
args=(--schema "$dir/schema.toml")
for p in $(seq 0 $((parties - 1))); do args+=(--party "p$p=$dir/party$p.csv"); done
for sql in \
  "SELECT COUNT(*), AVG(age), STDDEV_SAMP(age) FROM patients" \
  "SELECT sex, COUNT(*), AVG(bmi), AVG(systolic_bp) FROM patients WHERE age >= 50 GROUP BY sex" \
  "SELECT LINREG(systolic_bp, age, bmi, cholesterol) FROM patients" \
  "SELECT HISTOGRAM(age, 18, 98, 80) FROM patients" \
  "SELECT MEDIAN(age) FROM patients" \
  "SELECT MEDIAN(bmi), PERCENTILE_CONT(0.9) WITHIN GROUP (ORDER BY bmi), MIN(age), MAX(age) FROM patients" \
  "SELECT sex, COUNT(*), MEDIAN(bmi) FROM patients WHERE age >= 50 GROUP BY sex"; do
  for mode in "" "--processes"; do
    /usr/bin/time -f "  wall %e s, peak RSS %M KiB" ./target/release/concord run "${args[@]}" --sql "$sql" --format json $mode
  done
done
rm -rf "$dir"
