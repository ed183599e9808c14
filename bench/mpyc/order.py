"""MPyC baseline: maximum and median (by oblivious sorting) of a secret-shared vector.

x (from party 0) is a vector of N secure integers (mpc.SecInt(32)).
  --workload max     mpc.max(x), opened
  --workload median  mpc.sorted(x), then the middle element (lower median), opened

Timing as in cmp.py: online = inputs shared -> result opened (party 0 prints).

Run e.g.:  PROG=order.py bench/mpyc/run.sh 10000 --workload max
"""
import argparse
import json
import sys
import time

T_START = time.perf_counter()

from mpyc.runtime import mpc  # noqa: E402  (parses/strips MPyC's own flags)


def peer_bytes():
    return sum(p.protocol.nbytes_sent for p in mpc.parties
               if p.pid != mpc.pid and p.protocol is not None)


async def main(n, workload):
    secint = mpc.SecInt(32)
    await mpc.start()
    xv = [((i * 2654435761) % 2**32) - 2**31 for i in range(n)]
    xs = mpc.input([secint(v) for v in xv] if mpc.pid == 0 else [secint()] * n, senders=0)
    await mpc.gather(xs)
    await mpc.barrier('inputs')
    await mpc.transfer(0)
    t_in = time.perf_counter()
    b_in = peer_bytes()
    if workload == 'max':
        z = await mpc.output(mpc.max(xs))
        expect = max(xv)
    else:
        s = mpc.sorted(xs)
        z = await mpc.output(s[(n - 1) // 2])
        expect = sorted(xv)[(n - 1) // 2]
    t_out = time.perf_counter()
    b_out = peer_bytes()
    if mpc.pid == 0:
        ok = int(z) == expect
        print('OK' if ok else 'MISMATCH', file=sys.stderr, flush=True)
        online = t_out - t_in
        print(json.dumps({
            'tool': 'mpyc', 'workload': workload, 'size': n, 'parties': len(mpc.parties),
            'threshold': mpc.threshold, 'secint_bits': 32,
            'setup_seconds': round(t_in - T_START, 6), 'online_seconds': round(online, 6),
            'online_bytes_sent_party0': b_out - b_in, 'correct': ok,
        }), flush=True)
    await mpc.shutdown()


if __name__ == '__main__':
    ap = argparse.ArgumentParser()
    ap.add_argument('--size', type=int, default=10_000)
    ap.add_argument('--workload', choices=['max', 'median'], default='max')
    args = ap.parse_args()
    mpc.run(main(args.size, args.workload))
