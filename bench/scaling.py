"""How `stackkit fit --meta auto` grows with the data: time and peak memory per candidate.

Grid: runs in {5, 10, 20, 50} x train rows in {5k, 20k, 100k} (synthetic, stackkit.data.synthetic:
7 images per person, 18 classes, 5 folds; test rows = 2/3 of the train rows). Each cell runs in its
own process (so its peak RSS is its own), cold (no cache), and prints one JSON line; at the end a
table per candidate with the growth exponent of its fit time in cells = rows x runs (a least-squares
slope of log seconds on log cells: 1.0 is linear), and its exponents in rows and in runs apart.

    python bench/scaling.py                          # the whole grid (hours on 2 cores)
    python bench/scaling.py --runs 5,10 --rows 5000,20000
    python bench/scaling.py --meta lr,xgboost --timeout 900

A cell that passes ``--timeout`` seconds is reported as such and larger cells of the same row count
are skipped.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

CELL = r"""
import json, os, resource, sys, tempfile, time
from stackkit.contract.store import Store
from stackkit.data.synthetic import make_case
from stackkit.fit import fit_ensemble
runs, rows, meta = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
groups = max(10, rows // 7)
case = make_case(n_groups=groups, n_test=max(70, (2 * rows) // 3), n_runs=runs, seed=0)
store = Store(tempfile.mkdtemp(prefix="stackkit-scaling-"))
case.write(store)
logits_mb = (runs * (groups * 7 + 5 * max(70, (2 * rows) // 3)) * 18 * 4) / 2**20
t0 = time.perf_counter()
res = fit_ensemble(store, meta=meta, name="s", use_cache=False)
wall = time.perf_counter() - t0
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
peak_children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
print(json.dumps({
    "runs": runs, "rows": groups * 7, "wall_s": wall, "peak_mb": peak,
    "peak_worker_mb": peak_children, "logits_mb": logits_mb,
    "candidates": {c.meta: {"seconds": c.seconds, "macro_f1": c.scores["macro_f1"]}
                   for c in res.candidates},
}))
"""


def run_cell(runs: int, rows: int, meta: str, timeout: float) -> dict | None:
    env = dict(os.environ, STACKKIT_CACHE=tempfile.mkdtemp(prefix="stackkit-scaling-cache-"))
    t0 = time.perf_counter()
    try:
        out = subprocess.run(
            [sys.executable, "-c", CELL, str(runs), str(rows), meta],
            capture_output=True, text=True, timeout=timeout, env=env, check=True,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        print(f"runs {runs:>3} rows {rows:>7}: over {timeout:.0f} s, skipped", flush=True)
        return None
    except subprocess.CalledProcessError as e:
        print(f"runs {runs:>3} rows {rows:>7}: failed: {e.stderr.strip().splitlines()[-1]}")
        return None
    cell = json.loads(out.stdout.strip().splitlines()[-1])
    print(
        f"runs {runs:>3} rows {rows:>7}: wall {cell['wall_s']:7.1f} s, peak {cell['peak_mb']:7.0f} MB "
        f"(workers {cell['peak_worker_mb']:.0f} MB; logits {cell['logits_mb']:.0f} MB), "
        f"process {time.perf_counter() - t0:.0f} s",
        flush=True,
    )
    return cell


def exponent(cells: list[dict], meta: str) -> float | None:
    pts = [(c["runs"] * c["rows"], c["candidates"][meta]["seconds"]) for c in cells
           if meta in c["candidates"] and c["candidates"][meta]["seconds"] > 0]  # fmt: skip
    if len({p[0] for p in pts}) < 2:
        return None
    x, y = np.log([p[0] for p in pts]), np.log([p[1] for p in pts])
    return float(np.polyfit(x, y, 1)[0])


def exponents(cells: list[dict], meta: str) -> tuple[float | None, float | None]:
    """Growth exponents in rows and in runs apart: least squares of log seconds on log rows and
    log runs together (knn is ~2 in rows, ~1 in runs); None where the cells do not vary."""
    pts = [(c["rows"], c["runs"], c["candidates"][meta]["seconds"]) for c in cells
           if meta in c["candidates"] and c["candidates"][meta]["seconds"] > 0]  # fmt: skip
    if len(pts) < 3:
        return None, None
    a = np.log(np.array(pts, dtype=float))
    vary = [len(set(a[:, j])) > 1 for j in (0, 1)]
    cols = [a[:, j] for j in (0, 1) if vary[j]]
    coef = np.linalg.lstsq(np.column_stack([np.ones(len(a)), *cols]), a[:, 2], rcond=None)[0]
    it = iter(coef[1:])
    return tuple(float(next(it)) if v else None for v in vary)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", default="5,10,20,50")
    ap.add_argument("--rows", default="5000,20000,100000")
    ap.add_argument("--meta", default="auto")
    ap.add_argument("--timeout", type=float, default=1800.0, help="seconds per cell")
    ap.add_argument("--json", help="also write every cell to this file")
    args = ap.parse_args()
    cells = []
    for rows in (int(v) for v in args.rows.split(",")):
        for runs in (int(v) for v in args.runs.split(",")):
            cell = run_cell(runs, rows, args.meta, args.timeout)
            if cell is None:
                break
            cells.append(cell)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(cells, f, indent=1)
    metas = sorted({m for c in cells for m in c["candidates"]})
    print(
        "\ncandidate   "
        + "  ".join(f"{c['runs']}x{c['rows']}".rjust(11) for c in cells)
        + "  exponent  in rows  in runs"
    )
    for m in metas:
        secs = "  ".join(
            f"{c['candidates'][m]['seconds']:11.2f}" if m in c["candidates"] else " " * 11
            for c in cells
        )
        e, (er, en) = exponent(cells, m), exponents(cells, m)
        fmt = lambda v: "" if v is None else f"{v:.2f}"  # noqa: E731
        print(f"{m:<11} {secs}  {fmt(e):>8}  {fmt(er):>7}  {fmt(en):>7}")
    print("wall        " + "  ".join(f"{c['wall_s']:11.1f}" for c in cells))
    print("peak MB     " + "  ".join(f"{c['peak_mb']:11.0f}" for c in cells))
    print("logits MB   " + "  ".join(f"{c['logits_mb']:11.0f}" for c in cells))


if __name__ == "__main__":
    main()
