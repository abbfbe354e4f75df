"""Peak memory of `stackkit fit` against the float32 size of the logits it reads (issue 14).

Issue 14's bound: `fit --meta auto` on 50 runs (make_case(n_groups=2700, n_test=12600): 18,900
OOF rows + 5 folds x 12,600 test rows, 18 classes, ~295 MB of float32 logits) peaks under
2x those logits plus a constant, the constant being the peak of the same fit on 2 runs.

Each fit is `python -m stackkit.cli fit --no-cache` in a child process with its own cache
folder. What is counted, sampled every ~50 ms from /proc, is the memory of the whole process
tree (the CLI process, joblib's loky workers, loky's resource tracker): per process its PSS
(proportional set size, /proc/<pid>/smaps_rollup), in which a page shared by n processes counts
1/n in each, so a memory-mapped array read by the parent and both workers counts once in the
sum, not three times as it would in RSS (VmRSS of /proc/<pid>/status, the fallback where
smaps_rollup is missing). Shared-memory pages (Pss_Shmem) are left out of the sum and counted
instead as the files of the tree's joblib memmapping folders in /dev/shm (tmpfs: RAM that no
process may have mapped yet, or not all of it), once, whole. A peak between two samples can be
missed: the CLI process's own peak RSS (ru_maxrss from wait4) is printed beside the sampled one
as a check.

Both fits run with the same ``--n-jobs`` (default -1, every core): fit's own default fits 2 runs
in one process, which would leave the worker processes' start-up memory (an interpreter with
scikit-learn and xgboost imported, ~150 MB each) out of the constant and in the growth.

    python bench/memory.py                          # --meta auto, 2 runs then 50 runs
    python bench/memory.py --meta vote,lr           # the issue's own case, quicker
    python bench/memory.py --runs 20 --cases /tmp/memcases   # cases kept and reused there
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BOUND = 2.0
N_CLASSES, N_FOLDS = 18, 5
SAMPLE_S = 0.05


def build(root: Path, runs: int, groups: int, test: int) -> Path:
    """A make_case store of ``runs`` runs under ``root`` (reused when already written)."""
    from stackkit.contract.store import Store
    from stackkit.data.synthetic import make_case

    d = root / f"g{groups}-t{test}-r{runs}"
    if not (d / "runs").is_dir() or len(list((d / "runs").iterdir())) != runs:
        t0 = time.perf_counter()
        make_case(n_groups=groups, n_test=test, n_runs=runs, seed=0).write(Store(d))
        print(f"built {runs} runs in {time.perf_counter() - t0:.0f} s: {d}", flush=True)
    return d


def tree(pid: int) -> list[int]:
    """``pid`` and its descendants (children of every thread: loky may start workers from one)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as f:
                    todo += [int(c) for c in f.read().split()]
        except OSError:  # gone meanwhile
            pass
    return out


def process_kb(pid: int) -> int:
    """PSS less shared memory (kB), or VmRSS where smaps_rollup is missing; 0 once gone."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            fields = dict(line.split(":", 1) for line in f if ":" in line)
        kb = {k: int(v.split()[0]) for k, v in fields.items() if v.strip().endswith("kB")}
        return kb["Pss"] - kb.get("Pss_Shmem", 0)
    except FileNotFoundError:
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        return int(line.split()[1])
        except OSError:
            return 0
    except (OSError, KeyError, ValueError):
        return 0
    return 0


def shm_kb(pids: list[int]) -> int:
    """Bytes (kB) of the files in joblib's memmapping folders of these processes in /dev/shm."""
    total = 0
    try:
        names = os.listdir("/dev/shm")
    except OSError:
        return 0
    for name in names:
        parts = name.split("_")
        if name.startswith("joblib_memmapping_folder_") and int(parts[3]) in pids:
            for dirpath, _, files in os.walk(f"/dev/shm/{name}"):
                for fn in files:
                    with contextlib.suppress(OSError):
                        total += os.stat(os.path.join(dirpath, fn)).st_blocks * 512 // 1024
    return total


def measure(store: Path, meta: str, extra: list[str]) -> tuple[float, float, float, str]:
    """(sampled peak MB of the tree, the CLI process's ru_maxrss MB, wall s, the peak's parts)
    of one fit."""
    env = dict(os.environ, STACKKIT_CACHE=tempfile.mkdtemp(prefix="stackkit-mem-cache-"))
    cmd = [sys.executable, "-m", "stackkit.cli", "fit", "--artifacts", str(store), "--meta",
           meta, "--name", "mem-" + meta.replace(",", "-"), "--force", "--no-cache", *extra]  # fmt: skip
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    peak, parts = 0, ""
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        pids = tree(proc.pid)
        kb = [process_kb(p) for p in pids]
        shm = shm_kb(pids)
        if sum(kb) + shm > peak:
            peak = sum(kb) + shm
            parts = f"CLI {kb[0] / 1024:.0f} MB, others {[round(k / 1024) for k in kb[1:]]}"
            parts += f", joblib /dev/shm {shm / 1024:.0f} MB" if shm else ""
        time.sleep(SAMPLE_S)
    wall = time.perf_counter() - t0
    out = proc.stdout.read().decode(errors="replace")
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        sys.exit(f"fit failed ({proc.returncode}):\n{out[-3000:]}")
    return peak / 1024, usage.ru_maxrss / 1024, wall, parts


def logits_mb(runs: int, groups: int, test: int) -> float:
    return runs * (groups * 7 + N_FOLDS * test) * N_CLASSES * 4 / 2**20


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--meta", default="auto")
    ap.add_argument("--runs", type=int, default=50)
    ap.add_argument("--base-runs", type=int, default=2, help="the runs the constant is measured on")
    ap.add_argument("--groups", type=int, default=2700)
    ap.add_argument("--test", type=int, default=12600)
    ap.add_argument(
        "--cases", help="folder to keep the built cases in (reused); default a temp one"
    )
    ap.add_argument("--n-jobs", type=int, default=-1, help="fit's --n-jobs, for both fits")
    args = ap.parse_args()
    root = Path(args.cases or tempfile.mkdtemp(prefix="stackkit-mem-"))
    extra = ["--n-jobs", str(args.n_jobs)]
    found = {}
    for runs in (args.base_runs, args.runs):
        store = build(root, runs, args.groups, args.test)
        peak, hwm, wall, parts = measure(store, args.meta, extra)
        found[runs] = peak
        print(f"{runs:>3} runs, fit --meta {args.meta}: peak {peak:.0f} MB (process tree, PSS: "
              f"{parts}; the CLI process's own peak RSS {hwm:.0f} MB), {wall:.0f} s, logits float32 "
              f"{logits_mb(runs, args.groups, args.test):.0f} MB; load average "
              f"{os.getloadavg()[0]:.1f}", flush=True)  # fmt: skip
    size = logits_mb(args.runs, args.groups, args.test)
    const = found[args.base_runs]
    ratio = (found[args.runs] - const) / size
    print(f"logits float32 {size:.0f} MB; constant ({args.base_runs} runs) {const:.0f} MB; "
          f"peak ({args.runs} runs) {found[args.runs]:.0f} MB; (peak - constant) / logits "
          f"{ratio:.2f} (bound {BOUND}: {'within' if ratio <= BOUND else 'OVER'})")  # fmt: skip


if __name__ == "__main__":
    main()
