"""Where the work runs: ``local`` (this process, joblib's own workers) or ``ray`` (a Ray cluster).

Ray is an optional extra (``pip install 'stackkit[ray]'``) and is imported only here, only when
``engine="ray"``. The cluster is Ray's own ``RAY_ADDRESS`` when set (a remote cluster, reached with
Ray's token authentication: ``RAY_AUTH_MODE=token`` plus ``RAY_AUTH_TOKEN`` or
``RAY_AUTH_TOKEN_PATH``); otherwise a local cluster on this machine that listens on loopback only.

    >>> with parallel_backend("ray"):   # the meta stage's joblib.Parallel runs on Ray
    ...     cross_val_proba(est, X, y, folds, n_classes)
"""

from __future__ import annotations

import logging
import os
import time

from stackkit.contract.errors import StackkitError

log = logging.getLogger(__name__)

ENGINES = ("local", "ray")
LOOPBACK = "127.0.0.1"
# Ray treats "no multi-node cluster" as "use the loopback address for every server"; it is read
# when ray is first imported, so it is set before that for a local cluster.
_LOCAL_ONLY_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


def check_engine(engine: str) -> str:
    if engine not in ENGINES:
        raise StackkitError(f"--engine must be one of {', '.join(ENGINES)}, got {engine!r}")
    return engine


def import_ray():
    try:
        import ray
    except ImportError:
        raise StackkitError(
            "--engine ray needs Ray, an optional extra: pip install 'stackkit[ray]'"
        ) from None
    return ray


def connect(num_cpus: int | None = None):
    """Connect to ``RAY_ADDRESS``, else start a local cluster on loopback only; return ``ray``.

    A session already open in this process (``ray.init`` called by the caller) is reused as is.
    """
    address = os.environ.get("RAY_ADDRESS")
    if not address:
        os.environ.setdefault(_LOCAL_ONLY_ENV, "0")  # inherited by the cluster's processes
    ray = import_ray()
    if ray.is_initialized():
        return ray
    if address:
        log.info("connecting to the Ray cluster at %s", address)
        ray.init(address=address)
        return ray
    _local_only(ray)
    log.info("starting a local Ray cluster (loopback only)")
    ray.init(
        address="local",
        num_cpus=num_cpus,
        include_dashboard=False,
        _node_ip_address=LOOPBACK,
    )
    node = ray.util.get_node_ip_address()
    if node != LOOPBACK:
        log.warning("the local Ray cluster listens on %s, not only on loopback", node)
    return ray


def _local_only(ray) -> None:
    """The constant Ray read from that variable, in case ray was imported before it was set."""
    from ray._private import ray_constants

    ray_constants.ENABLE_RAY_CLUSTER = False


def parallel_backend(engine: str = "local", n_jobs: int = -1):
    """A context for ``joblib.Parallel``: for ``local``, joblib's loky processes that exit when
    this process dies (:func:`local_backend`); Ray's joblib backend for ``ray``."""
    import joblib

    if check_engine(engine) == "local":
        return joblib.parallel_config(backend=local_backend())

    connect()
    from ray.util.joblib import register_ray

    register_ray()
    return joblib.parallel_backend("ray", n_jobs=n_jobs)


# How often a worker checks that its parent is alive: after a SIGKILL of ``stackkit fit`` its
# workers are gone within about this long (loky's own idle timeout would keep them 300 s).
PARENT_POLL_S = 0.5


def local_backend():
    """joblib's loky backend whose worker processes watch their parent and exit when it dies.

    Every local ``Parallel`` must run under this same backend (``parallel_backend("local")``):
    loky reuses its workers only while the executor's arguments stay the same."""
    from joblib.parallel import LokyBackend

    return LokyBackend(initializer=watch_parent, initargs=(os.getpid(),))


def watch_parent(parent: int) -> None:
    """Run in each worker at start: a daemon thread that ends the worker once ``parent`` is no
    longer its parent (the parent died, by whatever signal, and the worker was re-parented)."""
    import threading

    def watch():
        while os.getppid() == parent:
            time.sleep(PARENT_POLL_S)
        os._exit(1)

    threading.Thread(target=watch, name="stackkit-watch-parent", daemon=True).start()


def _ready() -> int:
    """What a worker imports before its first fit."""
    import sklearn.ensemble  # noqa: F401
    import xgboost  # noqa: F401

    import stackkit.meta  # noqa: F401

    return os.getpid()


def warm_local_workers(n_jobs: int):
    """Start joblib's worker processes, and their imports, in a background thread; returns the
    thread (join it before the first real ``Parallel``; its ``worker_pids`` then lists the
    processes it reached), or None when one process will do.

    Starting 2 workers and importing scikit-learn and xgboost in them takes ~1.5 s; done while
    the parent reads and validates the runs, the first real pool finds them ready (joblib
    reuses its worker processes between ``Parallel`` calls).
    """
    import threading

    from joblib import Parallel, delayed, effective_n_jobs

    n = effective_n_jobs(n_jobs)
    if n <= 1:
        return None

    def warm():
        try:
            with parallel_backend("local"):  # joblib's backend setting is per thread
                pids = Parallel(n_jobs=n_jobs)(delayed(_ready)() for _ in range(n))
            thread.worker_pids = set(pids)
        except Exception:  # only a head start: the real pool starts its own workers if need be
            log.debug("warming the worker pool failed", exc_info=True)

    thread = threading.Thread(target=warm, name="stackkit-warm-workers", daemon=True)
    thread.worker_pids = set()
    thread.start()
    return thread
