"""Reading runs against the disk: `stackkit leaderboard` on a warm cache against a bare pyarrow
read of the same parquet files, each a whole process (start included), on 10 runs and on 50.

Issue 14's bound: within 2x. The cache is warmed first with one leaderboard of the same
arguments; then the commands run in turn (A B C A B C ...) and the ratio is taken pair by pair
(the machine's speed drifts): its median is printed with the load average. C is a stricter
bare read, for reference: ``pq.ParquetFile(p).read()`` skips ``pq.read_table``'s dataset layer,
whose import (pyarrow.dataset, and pandas with it) is about 0.35 s of B; stackkit reads that way.

    python bench/read.py                       # 10 and 50 runs, --meta vote,lr (cheap to warm)
    python bench/read.py --runs 10 --meta auto # the default candidates (warming takes minutes)
    python bench/read.py --against ../old      # A/B: also another checkout's leaderboard (D)
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from stackkit.contract.store import Store
from stackkit.data.synthetic import make_case

BOUND = 2.0
BARE = (
    "import sys, pathlib, pyarrow.parquet as pq\n"
    "for p in sorted(pathlib.Path(sys.argv[1], 'runs').glob('*/*.parquet')): pq.read_table(p)\n"
)
BARE_FILE = BARE.replace("pq.read_table(p)", "pq.ParquetFile(p).read()")


def timed(cmd: list[str], env: dict, cwd: str | None = None) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, env=env, check=True, capture_output=True, cwd=cwd)
    return time.perf_counter() - t0


def one(runs: int, args, tmp: Path) -> float:
    root = tmp / "artifacts"
    make_case(n_groups=args.groups, n_test=args.test, n_runs=runs, seed=0).write(Store(root))
    env = dict(os.environ, STACKKIT_CACHE=str(tmp / "cache"))
    board = [sys.executable, "-m", "stackkit.cli", "leaderboard", "--artifacts", str(root),
             "--meta", args.meta, *([] if args.loro else ["--no-loro"])]  # fmt: skip
    bare = [sys.executable, "-c", BARE, str(root)]
    bare_file = [sys.executable, "-c", BARE_FILE, str(root)]
    # --against: run from that checkout (``-m`` puts the working folder first on sys.path),
    # with a cache of its own
    other = dict(env, STACKKIT_CACHE=str(tmp / "cache-against"))
    t0 = time.perf_counter()
    subprocess.run(board, env=env, check=True, capture_output=True)  # warms the cache
    if args.against:
        subprocess.run(board, env=other, check=True, capture_output=True, cwd=args.against)
    size = sum(p.stat().st_size for p in root.glob("runs/*/*.parquet")) / 2**20
    print(f"{runs} runs ({size:.0f} MB of parquet): cache warmed in "
          f"{time.perf_counter() - t0:.0f} s", flush=True)  # fmt: skip
    ratios, a, b, c, strict, d, ab = [], [], [], [], [], [], []
    for _ in range(args.n):
        a.append(timed(board, env))
        b.append(timed(bare, env))
        c.append(timed(bare_file, env))
        ratios.append(a[-1] / b[-1])
        strict.append(a[-1] / c[-1])
        if args.against:
            d.append(timed(board, other, cwd=args.against))
            ab.append(a[-1] / d[-1])
    r = float(np.median(ratios))
    print(
        f"{runs} runs: leaderboard (warm) {np.median(a):.2f} s, bare pyarrow read "
        f"{np.median(b):.2f} s, median ratio {r:.2f} (min {min(ratios):.2f}, max "
        f"{max(ratios):.2f}; bound {BOUND}: {'within' if r <= BOUND else 'OVER'}); load average "
        f"{os.getloadavg()[0]:.1f}",
        flush=True,
    )
    print(
        f"{runs} runs: against pq.ParquetFile(p).read() {np.median(c):.2f} s, median ratio "
        f"{np.median(strict):.2f} (min {min(strict):.2f}, max {max(strict):.2f})",
        flush=True,
    )
    if args.against:
        print(
            f"{runs} runs: {args.against}'s leaderboard {np.median(d):.2f} s, this one / that one "
            f"median {np.median(ab):.2f} (min {min(ab):.2f}, max {max(ab):.2f}); its ratio to the "
            f"bare read {np.median(np.array(d) / b):.2f}",
            flush=True,
        )
    return r


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", default="10,50")
    ap.add_argument("--groups", type=int, default=2700)
    ap.add_argument("--test", type=int, default=12600)
    ap.add_argument("--meta", default="vote,lr")
    ap.add_argument("--loro", action="store_true", help="keep the leave-one-run-out column")
    ap.add_argument("-n", type=int, default=5, help="pairs timed")
    ap.add_argument("--against", metavar="DIR", help="a checkout to A/B against (holds stackkit/)")
    args = ap.parse_args()
    for runs in (int(v) for v in args.runs.split(",")):
        with tempfile.TemporaryDirectory(prefix="stackkit-read-") as tmp:  # 0.5 GB at 50 runs
            one(runs, args, Path(tmp))


if __name__ == "__main__":
    main()
