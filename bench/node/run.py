#!/usr/bin/env python3
"""Overhead of sessions through three nodes against `concord run`, same data and queries.

Usage: python3 bench/node/run.py [ROWS] [REPS]   (defaults 1000000 and 5)

Builds nothing: uses target/release/concord (or $CONCORD). Generates the
patient tables with bench/analytics/gen.py, starts three `concord node`
processes on 127.0.0.1:75x0 (API) and 75x1 (peer port), pairs them, and times
each of the demo's queries REPS times as whole commands (wall clock, process
start to exit): `concord run` (all parties in one process), `concord run
--processes` (one process per party), and `concord query` through the nodes.
Prints a Markdown table of medians and ratios.
"""
import os, shutil, statistics, subprocess, sys, tempfile, time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.environ.get("CONCORD", os.path.join(ROOT, "target", "release", "concord"))
QUERIES = [
    "SELECT COUNT(*), AVG(age), STDDEV_SAMP(age) FROM patients",
    "SELECT sex, COUNT(*), AVG(bmi), AVG(systolic_bp) FROM patients GROUP BY sex",
    "SELECT smoker, COUNT(*), AVG(cholesterol) FROM patients WHERE age >= 50 GROUP BY smoker",
    "SELECT CORR(systolic_bp, age), REGR_SLOPE(systolic_bp, age), REGR_INTERCEPT(systolic_bp, age) FROM patients",
    "SELECT HISTOGRAM(age, 20, 100, 8) FROM patients WHERE diabetic = 'yes'",
    "SELECT LINREG(systolic_bp, age, bmi) FROM patients",
    "SELECT MEDIAN(age), PERCENTILE_CONT(0.9) WITHIN GROUP (ORDER BY bmi) FROM patients",
]


def sh(*args, **kw):
    return subprocess.run([BIN, *args], check=True, capture_output=True, text=True, **kw).stdout


def timed(args):
    t = time.perf_counter()
    r = subprocess.run([BIN, *args], capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"failed: {' '.join(args)}\n{r.stderr}")
    return time.perf_counter() - t, r.stdout


def main():
    rows = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
    reps = int(sys.argv[2]) if len(sys.argv) > 2 else 5
    work = tempfile.mkdtemp(prefix="concord-node-bench-")
    nodes = []
    try:
        data = os.path.join(work, "data")
        subprocess.run([sys.executable, os.path.join(ROOT, "bench/analytics/gen.py"), str(rows), "3", data], check=True,
                       capture_output=True)
        schema = os.path.join(data, "schema.toml")
        names = [f"hospital-{i}" for i in range(3)]
        for i, name in enumerate(names):
            d = os.path.join(work, name)
            sh("init", "--name", name, "--dir", d, "--api-listen", f"127.0.0.1:75{i}0", "--mpc-listen", f"127.0.0.1:75{i}1")
            cfg = os.path.join(d, "concord.toml")
            text = open(cfg).read().replace("heartbeat_period_secs = 5", "heartbeat_period_secs = 1")
            open(cfg, "w").write(text)
            sh("dataset", "add", "patients", "--file", os.path.join(data, f"party{i}.csv"), "--schema", schema, "--dir", d)
            log = open(os.path.join(work, f"{name}.log"), "w")
            p = subprocess.Popen([BIN, "node", "--dir", d], stdout=subprocess.PIPE, stderr=log, text=True)
            p.stdout.readline()
            nodes.append(p)
        for a, b in [(0, 1), (0, 2), (1, 2)]:
            inv = sh("peer", "invite", "--dir", os.path.join(work, names[a])).strip()
            sh("peer", "join", inv, "--dir", os.path.join(work, names[b]))
        time.sleep(3)
        parties = [f"--party={n}={os.path.join(data, f'party{i}.csv')}" for i, n in enumerate(names)]
        print(f"{rows} rows over 3 parties, {reps} runs each, medians of whole-command wall time (s)\n")
        print("| query | `concord run` | `run --processes` | `concord query` (3 nodes) | query / run | query / processes |")
        print("| --- | ---: | ---: | ---: | ---: | ---: |")
        for q in QUERIES:
            run = statistics.median(timed(["run", "--schema", schema, *parties, "--sql", q])[0] for _ in range(reps))
            procs = statistics.median(
                timed(["run", "--processes", "--schema", schema, *parties, "--sql", q])[0] for _ in range(reps))
            outs = [timed(["query", "--node", "http://127.0.0.1:7500", "--parties", ",".join(names), "--sql", q])
                    for _ in range(reps)]
            query = statistics.median(t for t, _ in outs)
            expect = timed(["run", "--schema", schema, *parties, "--sql", q])[1]
            if outs[0][1] != expect:
                sys.exit(f"answers differ for {q}:\n{outs[0][1]}\nvs\n{expect}")
            print(f"| `{q}` | {run:.3f} | {procs:.3f} | {query:.3f} | {query / run:.2f} | {query / procs:.2f} |")
        metrics = subprocess.run(["curl", "-s", "http://127.0.0.1:7500/metrics"], capture_output=True, text=True).stdout
        done = sum(float(l.split()[-1]) for l in metrics.splitlines() if l.startswith('concord_sessions{state="done"}'))
        control = sum(float(l.split()[-1]) for l in metrics.splitlines() if l.startswith("concord_control_bytes_sent_total{"))
        if done:
            print(f"\ncoordinator's control-channel bytes (requests, to both peers, heartbeats included): "
                  f"{control:.0f} over {done:.0f} sessions = {control / done:.0f} B per session")
    finally:
        for p in nodes:
            p.terminate()
        for p in nodes:
            p.wait()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
