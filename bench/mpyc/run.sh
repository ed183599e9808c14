#!/usr/bin/env bash
# Launch 3 MPyC parties as 3 separate OS processes on localhost (MPyC -M3 -I<i>),
# wait for all, print party 0's JSON line, the whole wall time and peak RSS per party.
#
# usage: bench/mpyc/run.sh SIZE [extra program args, e.g. --mode np]
#   env PROG=mul.py|cmp.py (default mul.py), BASE_PORT (default 21365)
set -euo pipefail
SIZE=${1:?usage: run.sh SIZE [extra args]}
shift || true
cd "$(dirname "$0")"
PROG=${PROG:-mul.py}
BASE_PORT=${BASE_PORT:-21365}
OUT=$(mktemp -d /tmp/mpyc_run.XXXXXX)
TIME=()
[ -x /usr/bin/time ] && TIME=(/usr/bin/time -v)

t0=$(date +%s.%N)
pids=()
for i in 0 1 2; do
  if [ ${#TIME[@]} -gt 0 ]; then
    "${TIME[@]}" -o "$OUT/time$i.txt" python3 "$PROG" -M3 -I$i -B "$BASE_PORT" --no-log --size "$SIZE" "$@" \
      >"$OUT/out$i.txt" 2>"$OUT/err$i.txt" &
  else
    python3 "$PROG" -M3 -I$i -B "$BASE_PORT" --no-log --size "$SIZE" "$@" \
      >"$OUT/out$i.txt" 2>"$OUT/err$i.txt" &
  fi
  pids+=($!)
done
rc=0
for p in "${pids[@]}"; do wait "$p" || rc=$?; done
t1=$(date +%s.%N)

cat "$OUT/out0.txt"
grep -hE '^(OK|MISMATCH)$' "$OUT/err0.txt" || true
wall=$(python3 -c "print(round($t1-$t0,3))")
rss=""
for i in 0 1 2; do
  if [ -f "$OUT/time$i.txt" ]; then
    kb=$(awk -F': ' '/Maximum resident set size/{print $2}' "$OUT/time$i.txt")
    rss+="${rss:+,}$(python3 -c "print(round($kb/1024,1))")"
  fi
done
echo "{\"prog\":\"$PROG\",\"size\":$SIZE,\"wall_seconds\":$wall,\"peak_rss_mib\":[${rss}],\"exit\":$rc,\"logs\":\"$OUT\"}"
exit $rc
