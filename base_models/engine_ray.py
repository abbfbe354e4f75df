"""Fold jobs on a Ray cluster: every missing (model, fold) is one Ray task, then the runs are
assembled from their shards. Imported only for ``--engine ray`` (``make base ENGINE=ray``).

    >>> from base_models.engine_ray import train_on_ray
    >>> train_on_ray(["nfnet_f0", "efficientnet_b3"], "data/mask", artifacts="/shared/artifacts")

The driver (this process) resolves each run's config and hash, decodes the image cache once per
run, submits one task per missing fold and assembles each run whose folds are all committed. A
task is :func:`base_models.runner.run_fold`: one GPU (or ``cpus`` CPUs where the cluster has no
GPU), a fresh worker process per task (``max_calls=1``, so its GPU memory is freed), retried when
its worker dies. Driver and workers must see the same ``data`` and ``artifacts`` paths (a shared
filesystem) and the same stackkit. The cluster is ``RAY_ADDRESS``, else a local one on loopback
(see :mod:`stackkit.cv.engine`).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

from base_models import runner, shards
from stackkit.contract.errors import StackkitError
from stackkit.contract.store import Store
from stackkit.cv import engine

log = logging.getLogger(__name__)

MAX_RETRIES = 3  # a worker that dies (out of memory, node lost) is retried this many times
POLL_S = 2.0  # how often the progress line is refreshed while jobs run


@dataclass
class Plan:
    """One run as the driver resolved it: its config hash and the folds still to train."""

    model: str
    run: str
    hash: str
    run_dir: Path
    n_folds: int
    todo: list[int]
    done: list[int]


def train_on_ray(
    models: list[str],
    data: str | Path,
    artifacts: str | Path | None = None,
    run: str | None = None,
    folds: str | list[int] | None = None,
    cpus: int = 1,
    force: bool = False,
    fold_fn=None,
    **options,
) -> list[runner.RunResult]:
    """Train every model's missing folds as Ray tasks; write each run once all its folds are in.

    ``options`` are :func:`base_models.train`'s (epochs, img_size, batch, lr, pretrained, pseudo,
    device, workers, threads, skip_bad_images, label_fix, age_boundary, seed). ``cpus`` is what
    each task asks for besides its GPU (on a CPU-only cluster, its whole request; the task's torch
    threads default to it). ``fold_fn`` replaces :func:`runner.run_fold` in the tasks (tests).
    """
    if run is not None and len(models) > 1:
        raise StackkitError("--run names one run: leave it out when training several models")
    ray = engine.connect()
    device = options.pop("device", None) or ("cuda" if _cluster(ray).get("GPU") else "cpu")
    gpu = device.startswith("cuda")
    request = {"num_cpus": cpus, "num_gpus": 1 if gpu else 0}
    check_resources(ray, request)
    if not gpu and options.get("threads") is None:
        options["threads"] = cpus  # the task's share of the node, not the node's every core
    artifacts = Store(artifacts).root.resolve()
    data = Path(data).resolve()
    plans = [_plan(m, data, artifacts, run, folds, force, options) for m in models]
    common = {"data": str(data), "artifacts": str(artifacts), "force": force, **options}
    common["device"] = "cuda" if gpu else "cpu"  # a task sees only the GPU Ray gave it
    jobs = {
        (p.model, k): {"model": p.model, "fold": k, "run": p.run, "expect_hash": p.hash, **common}
        for p in plans
        for k in p.todo
    }
    returned, failed = _run_jobs(ray, jobs, request, fold_fn)
    results = []
    for p in plans:
        trained = sorted(k for (m, k), r in returned.items() if m == p.model and r["trained"])
        complete = all(shards.finished(p.run_dir, k, p.hash) for k in range(p.n_folds))
        if complete:
            runner.assemble(
                p.model, data, artifacts, p.run, force=force, **_planner_options(options)
            )
        results.append(runner.RunResult(p.run_dir, complete, trained, p.done))
    if failed:
        first = next(iter(failed.items()))
        raise StackkitError(
            f"{len(failed)} fold job(s) failed; {first[0][0]} fold {first[0][1]}: {first[1]}"
        )
    return results


def _cluster(ray) -> dict:
    return {k: v for k, v in ray.cluster_resources().items() if k in ("CPU", "GPU")}


def check_resources(ray, request: dict) -> None:
    """Refuse a request that no node of the cluster can ever satisfy (Ray would wait forever)."""
    need = {"CPU": request["num_cpus"], "GPU": request["num_gpus"]}
    need = {r: v for r, v in need.items() if v}
    nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
    if any(all(res.get(r, 0) >= v for r, v in need.items()) for res in nodes):
        return
    have = ", ".join(f"{r}={v:g}" for r, v in sorted(_cluster(ray).items())) or "nothing"
    largest = max(nodes, key=lambda res: (res.get("GPU", 0), res.get("CPU", 0)), default={})
    raise StackkitError(
        f"the Ray cluster can never run a fold job: each asks for "
        f"{', '.join(f'{r}={v:g}' for r, v in need.items())} on one node, the cluster has {have} "
        f"(largest node: GPU={largest.get('GPU', 0):g}, CPU={largest.get('CPU', 0):g}); "
        "lower CPUS, or pass DEVICE=cpu on a cluster without GPUs"
    )


def _planner_options(options: dict) -> dict:
    """The driver resolves configs on its own CPU (it may have no GPU): the hash is the same."""
    return {**options, "device": "cpu", "workers": 0}


def _plan(model, data, artifacts, run, folds, force, options) -> Plan:
    opts = _planner_options(options)
    _, job = runner.resolve_job(model, data, artifacts, run, **opts)
    wanted = runner._parse_folds(folds, job.folds.n_folds)
    runner._already_complete(job, force)  # a finished run of another config: refuse early
    done = [k for k in wanted if not force and shards.finished(job.run_dir, k, job.hash)]
    todo = [k for k in wanted if k not in done]
    if todo:
        runner.prepare_job(job)  # decode the images once here, not once per fold job
    log.info(
        "run %s (config %s): %d fold job(s) to run, %d already committed",
        job.run, job.hash, len(todo), len(done),
    )  # fmt: skip
    return Plan(model, job.run, job.hash, job.run_dir, job.folds.n_folds, todo, done)


def _run_jobs(ray, jobs: dict, request: dict, fold_fn) -> tuple[dict, dict]:
    """Submit every job and show done / running / queued until all are back.

    Returns what each job returned and, for each job that failed, its error in one line.
    """
    from tqdm.auto import tqdm

    if not jobs:
        return {}, {}
    tracker = ray.remote(num_cpus=0)(_Tracker).remote()
    ray.get(tracker.started.remote())  # up before the jobs' workers compete with its start
    task = ray.remote(max_calls=1, max_retries=MAX_RETRIES, **request)(_fold_task)
    pending = {task.remote(spec, tracker, fold_fn): key for key, spec in jobs.items()}
    returned, failed, last, started, asked = {}, {}, None, set(), None
    with tqdm(total=len(jobs), desc="fold jobs", unit="job", disable=None) as bar:
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=len(pending), timeout=POLL_S)
            for ref in ready:
                key = pending.pop(ref)
                try:
                    returned[key] = ray.get(ref)
                except Exception as exc:  # reported per job, then all together
                    failed[key] = _one_line(exc)
                    log.error("%s fold %d failed: %s", *key, failed[key])
                bar.update(1)
            asked = asked or tracker.started.remote()
            if ray.wait([asked], timeout=0)[0]:  # never block on the tracker
                started, asked = set(ray.get(asked)), None
            running = sum(1 for key in pending.values() if key in started)
            state = (len(jobs) - len(pending), running, len(pending) - running)
            bar.set_postfix(running=state[1], queued=state[2])
            if state != last:
                log.info("fold jobs: %d done, %d running, %d queued", *state)
                last = state
    ray.kill(tracker)
    return returned, failed


def _one_line(exc: Exception) -> str:
    cause = getattr(exc, "cause", None) or exc  # a RayTaskError carries the task's own error
    text = (str(cause).strip().splitlines() or [""])[0]
    return text if isinstance(cause, StackkitError) else f"{type(cause).__name__}: {text}"


class _Tracker:
    """Which jobs have started: a task checks in here first, so the driver can tell running from
    queued without Ray's state API (which needs its dashboard)."""

    def __init__(self):
        self._started: list[tuple[str, int]] = []

    def start(self, key: tuple[str, int]) -> None:
        self._started.append(key)

    def started(self) -> list[tuple[str, int]]:
        return self._started


def _fold_task(spec: dict, tracker, fold_fn=None) -> dict:
    """Runs in a fresh Ray worker process: one fold job, returned as plain values."""
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(levelname).1s %(name)s: %(message)s")
    tracker.start.remote((spec["model"], spec["fold"]))
    t0 = time.time()
    res = (fold_fn or runner.run_fold)(**spec)
    return {"fold": res.fold, "trained": res.trained, "seconds": round(time.time() - t0, 1)}
