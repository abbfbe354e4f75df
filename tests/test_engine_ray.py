"""Fold jobs and the Ray engine: the same run as one machine makes, whatever runs the jobs.

The fold-job commands (run-fold, assemble) need no Ray. The Ray tests share one local
2-CPU session (about 7 s and 0.5 GB to start) and skip themselves when ray is not installed.
"""

from __future__ import annotations

import json
import os

import pandas as pd
import pytest
from imagedata import make_mask_data
from typer.testing import CliRunner

from base_models import train
from base_models.cli import jobs_app
from base_models.shards import shard_files
from stackkit.contract.errors import StackkitError
from stackkit.contract.store import Store
from stackkit.data.layouts import folds_for_data

FAST = {"device": "cpu", "workers": 0, "threads": 1, "epochs": 1}
MODEL = "test_resnet"


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_mask_data(tmp_path_factory.mktemp("img") / "data", n_people=12, n_test=10)


def _artifacts(tmp_path, data):
    art = tmp_path / "art"
    folds_for_data(data, artifacts=art, n_folds=2, seed=0)
    return art


@pytest.fixture(scope="module")
def local_run(tmp_path_factory, data):
    """The reference: the whole run on this machine, one fold after another."""
    art = _artifacts(tmp_path_factory.mktemp("local"), data)
    train(MODEL, data, artifacts=art, **FAST)
    return art


def _frames(art):
    d = Store(art).run_dir(MODEL)
    info = json.loads((d / "run.json").read_text())
    return pd.read_parquet(d / "oof.parquet"), pd.read_parquet(d / "test.parquet"), info


def assert_same_run(art, ref):
    oof, test, info = _frames(art)
    oof_ref, test_ref, info_ref = _frames(ref)
    pd.testing.assert_frame_equal(oof, oof_ref)  # bit-identical on the CPU with one thread
    pd.testing.assert_frame_equal(test, test_ref)
    assert info["config_hash"] == info_ref["config_hash"]
    Store(art).load_runs([MODEL], Store(art).read_folds())  # and it meets the contract


# --------------------------------------------------------------------------------------------
# fold jobs from the command line: what a SLURM array or a Kubernetes indexed job runs


def _cli(*args):
    res = CliRunner().invoke(jobs_app, [str(a) for a in args])
    return res.exit_code, res.output


def test_run_fold_commands_then_assemble_equal_the_local_run(tmp_path, data, local_run):
    art = _artifacts(tmp_path, data)
    common = ["--model", MODEL, "--data", data, "--artifacts", art, "--epochs", 1]
    machine = ["--device", "cpu", "--workers", 0, "--threads", 1]
    code, out = _cli("assemble", *common)
    assert code == 1 and "fold(s) 0, 1 have no shard committed" in out
    code, out = _cli("prepare", *common)
    assert code == 0 and "image cache ready" in out, out
    for k in (1, 0):  # any order, any machine
        code, out = _cli("run-fold", *common, *machine, "--fold", k)
        assert code == 0 and f"fold {k}: trained and committed" in out, out
    oof_shard = shard_files(Store(art).run_dir(MODEL), 0)[0]
    stamp = oof_shard.stat().st_mtime_ns
    code, out = _cli("run-fold", *common, *machine, "--fold", 0)  # the scheduler ran it twice
    assert code == 0 and "already committed, skipped" in out
    assert oof_shard.stat().st_mtime_ns == stamp
    code, out = _cli("assemble", *common)
    assert code == 0 and "complete" in out, out
    assert_same_run(art, local_run)


def test_run_fold_refuses_a_plan_made_with_another_config(tmp_path, data):
    from base_models.runner import run_fold

    art = _artifacts(tmp_path, data)
    with pytest.raises(StackkitError, match=r"resolves config hash .* the plan has 0123"):
        run_fold(MODEL, data, 0, artifacts=art, expect_hash="0123", **FAST)
    code, out = _cli("run-fold", "--model", MODEL, "--data", data, "--artifacts", art, "--fold", 5)
    assert code == 1 and out.startswith("error: --folds [5]")


# --------------------------------------------------------------------------------------------
# the Ray engine


@pytest.fixture(scope="module")
def ray_session():
    ray = pytest.importorskip("ray")
    from stackkit.cv.engine import connect

    address = os.environ.pop("RAY_ADDRESS", None)  # always a local cluster here
    connect(num_cpus=2)
    yield ray
    ray.shutdown()
    if address is not None:
        os.environ["RAY_ADDRESS"] = address


def test_local_cluster_listens_on_loopback_only(ray_session):
    assert ray_session.util.get_node_ip_address() == "127.0.0.1"
    assert ray_session.cluster_resources()["CPU"] == 2


def crash_once(marker):
    """A fold job whose worker dies (os._exit) the first time fold 1 runs."""

    def fold_fn(**spec):
        import os
        from pathlib import Path

        from base_models.runner import run_fold

        if spec["fold"] == 1 and not Path(marker).exists():
            Path(marker).write_text("died once")
            os._exit(1)
        return run_fold(**spec)

    return fold_fn


@pytest.mark.slow  # ~40 s: a real Ray cluster, a killed worker, a resume (make test-all runs it)
def test_ray_run_retries_a_dead_worker_equals_the_local_run_and_resumes(
    tmp_path, data, local_run, ray_session
):
    """One flow, since every fold job is a fresh process that imports torch (~9 s here)."""
    from base_models.engine_ray import train_on_ray

    art = _artifacts(tmp_path, data)
    marker = tmp_path / "died"
    [res] = train_on_ray([MODEL], data, artifacts=art, fold_fn=crash_once(marker), **FAST)
    assert marker.exists()  # fold 1's first worker died; Ray ran the job again
    assert res.complete and res.trained == [0, 1] and res.skipped == []
    assert_same_run(art, local_run)
    assert not [p for p in art.rglob("*") if p.suffix in (".pkl", ".pickle", ".joblib")]

    shard = shard_files(res.run_dir, 0)[0]
    stamp = shard.stat().st_mtime_ns
    (res.run_dir / "run.json").unlink()  # the driver died before assembling: run it again
    [again] = train_on_ray([MODEL], data, artifacts=art, fold_fn=crash_once(marker), **FAST)
    assert again.complete and again.trained == [] and again.skipped == [0, 1]
    assert shard.stat().st_mtime_ns == stamp  # committed shards are not touched
    assert_same_run(art, local_run)


def test_a_request_the_cluster_can_never_satisfy_is_refused(ray_session):
    from base_models.engine_ray import check_resources

    with pytest.raises(
        StackkitError, match=r"can never run a fold job: each asks for CPU=1, GPU=1"
    ):
        check_resources(ray_session, {"num_cpus": 1, "num_gpus": 1})
    with pytest.raises(StackkitError, match=r"CPU=3 on one node, the cluster has CPU=2"):
        check_resources(ray_session, {"num_cpus": 3, "num_gpus": 0})
    check_resources(ray_session, {"num_cpus": 2, "num_gpus": 0})


def test_fit_with_the_ray_engine_equals_the_local_fit(store, ray_session, tmp_path, monkeypatch):
    from stackkit.cli import app

    monkeypatch.setenv("STACKKIT_CACHE", str(tmp_path / "cache"))
    out = {}
    for engine in ("local", "ray"):
        args = ["fit", "--meta", "lr", "--name", engine, "--no-cache", "--engine", engine]
        res = CliRunner().invoke(app, [*args, "--artifacts", str(store.root)])
        assert res.exit_code == 0, res.output
        d = store.ensemble_dir(engine)
        out[engine] = [pd.read_parquet(d / f) for f in ("oof_proba.parquet", "test_proba.parquet")]
        out[engine].append(json.loads((d / "leaderboard.json").read_text()))
    for a, b in zip(out["local"][:2], out["ray"][:2]):
        pd.testing.assert_frame_equal(a, b)
    local, ray = out["local"][2], out["ray"][2]
    for c in (*local["candidates"], *ray["candidates"]):
        c.pop("seconds")
    assert local == ray


def test_one_run_name_for_several_models_is_refused(tmp_path, data):
    from base_models.cli import app

    args = ["--model", MODEL, "--model", "test_efficientnet", "--run", "r", "--data", str(data)]
    res = CliRunner().invoke(app, [*args, "--artifacts", str(tmp_path)])
    assert res.exit_code == 1 and res.output.startswith("error: --run names one run")
