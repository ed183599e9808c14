"""MPyC baseline: elementwise comparison x[i] < y[i] of two secret-shared vectors (revealed).

x (from party 0) and y (from party 1) are vectors of N secure integers
(mpc.SecInt(32), Shamir shares over MPyC's default prime field for SecInt(32)).
The comparison bits x[i] < y[i] are computed and opened to all parties.

Modes:
  --mode list  (default) Python lists of SecInt objects, [a < b for a, b in zip(x, y)]
  --mode np    MPyC secure numpy arrays (secint.array), elementwise x < y

Timing (time.perf_counter, at each party; party 0 prints):
  setup  = program start -> connections up + inputs shared (all parties synced)
  online = inputs shared -> comparison bits opened (the compared figure)

Run e.g.:  python3 cmp.py -M3 -I0 --size 10000 & python3 cmp.py -M3 -I1 --size 10000 & ...
"""
import argparse
import json
import sys
import time

T_START = time.perf_counter()

from mpyc.runtime import mpc  # noqa: E402  (parses/strips MPyC's own flags)
from mpyc import gmpy  # noqa: E402  (gmpy.version exists only if gmpy2 was loaded)


def peer_bytes():
    return sum(p.protocol.nbytes_sent for p in mpc.parties
               if p.pid != mpc.pid and p.protocol is not None)


async def main(n, mode):
    secint = mpc.SecInt(32)
    await mpc.start()
    t_conn = time.perf_counter()

    if mode == 'np':
        import numpy as np
        idx = np.arange(n, dtype=np.int64)
        xv = idx % 1000
        yv = (7 * idx) % 1000
        xs = mpc.input(secint.array(xv) if mpc.pid == 0 else secint.array(np.zeros(n, dtype=np.int64)), senders=0)
        ys = mpc.input(secint.array(yv) if mpc.pid == 1 else secint.array(np.zeros(n, dtype=np.int64)), senders=1)
    else:
        xv = [i % 1000 for i in range(n)]
        yv = [(7 * i) % 1000 for i in range(n)]
        xs = mpc.input([secint(v) for v in xv] if mpc.pid == 0 else [secint()] * n, senders=0)
        ys = mpc.input([secint(v) for v in yv] if mpc.pid == 1 else [secint()] * n, senders=1)

    # Make sure the input sharing has really finished before timing the online phase:
    # wait for all local input tasks, then one all-to-all sync round.
    await mpc.gather(xs)  # own shares of x and y received
    await mpc.gather(ys)
    await mpc.barrier('inputs')
    await mpc.transfer(0)
    t_in = time.perf_counter()
    b_in = peer_bytes()

    if mode == 'np':
        zs = xs < ys
    else:
        zs = [a < b for a, b in zip(xs, ys)]
    z = await mpc.output(zs)
    t_out = time.perf_counter()
    b_out = peer_bytes()

    if mpc.pid == 0:
        if mode == 'np':
            ok = bool((np.asarray(z, dtype=np.int64) == (xv < yv)).all())
        else:
            ok = all(int(a) == int(b < c) for a, b, c in zip(z, xv, yv))
        print('OK' if ok else 'MISMATCH', file=sys.stderr, flush=True)
        online = t_out - t_in
        rec = {
            'tool': 'mpyc', 'workload': 'cmp', 'mode': mode, 'size': n,
            'parties': len(mpc.parties), 'threshold': mpc.threshold,
            'secint_bits': 32, 'field_bits': secint.field.order.bit_length(),
            'gmpy2': hasattr(gmpy, 'version'),
            'connect_seconds': round(t_conn - T_START, 6),
            'setup_seconds': round(t_in - T_START, 6),
            'online_seconds': round(online, 6),
            'ops_per_second': round(n / online, 1),
            'online_bytes_sent_party0': b_out - b_in,
            'correct': ok,
        }
        print(json.dumps(rec), flush=True)
    await mpc.shutdown()


if __name__ == '__main__':
    ap = argparse.ArgumentParser()
    ap.add_argument('--size', type=int, default=1_000_000)
    ap.add_argument('--mode', choices=['list', 'np'], default='list')
    args = ap.parse_args()
    mpc.run(main(args.size, args.mode))
