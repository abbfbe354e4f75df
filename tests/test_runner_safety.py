"""The runner on a shared artifacts folder: names that cannot escape it, a run locked while it is
trained (the holder named), and what a killed command left behind removed on the next start."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
from imagedata import make_mask_data
from typer.testing import CliRunner

import base_models.runner as runner
from base_models import image_cache, train
from base_models.cli import app
from stackkit.contract.errors import StackkitError
from stackkit.data.layouts import folds_for_data

FAST = {"model": "test_resnet", "device": "cpu", "workers": 0, "threads": 1, "epochs": 1}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_mask_data(tmp_path_factory.mktemp("img") / "data", n_people=12, n_test=4)


@pytest.fixture
def art(tmp_path, data):
    folds_for_data(data, artifacts=tmp_path / "art", n_folds=2, seed=0)
    return tmp_path / "art"


def _tree(root):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


@pytest.mark.parametrize(
    "option, name",
    [("--run", "../x"), ("--run", "../../x"), ("--run", "/tmp/x"), ("--run", "."),
     ("--run", ""), ("--run", "a\nb"), ("--run", "<b>"), ("--pseudo", "../../x"),
     ("--pseudo", "")],
)  # fmt: skip
def test_a_bad_name_is_refused_before_anything_is_written(tmp_path, data, art, option, name):
    before = _tree(tmp_path)
    res = CliRunner().invoke(
        app, ["--model", "test_resnet", "--data", str(data), "--artifacts", str(art),
              "--device", "cpu", option, name],
    )  # fmt: skip
    kind = "run" if option == "--run" else "pseudo set"
    assert res.exit_code == 1 and res.output.startswith(f"error: {kind} name {name!r}")
    assert res.output.count("\n") == 1  # one line
    assert _tree(tmp_path) == before


def _hold(lock, seconds: float = 60):
    """Another process holding ``lock`` (as the runner takes it), ready when it printed."""
    code = textwrap.dedent(f"""
        import sys, time
        from stackkit.contract.locks import hold
        with hold({str(lock)!r}, "test"):
            print("held", flush=True)
            time.sleep({seconds})
    """)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=env
    )
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_second_runner_on_the_same_run_fails_naming_the_holder(data, art):
    lock = art / "runs" / "test_resnet" / runner.RUN_LOCK
    proc = _hold(lock)
    try:
        with pytest.raises(
            StackkitError, match=rf"run test_resnet is being written by process {proc.pid} of "
        ) as e:
            train(data=data, artifacts=art, **FAST)
        assert "\n" not in str(e.value) and f"lock file {lock}" in str(e.value)
        assert sorted(p.name for p in lock.parent.iterdir()) == [".lock", ".lock.holder"]
    finally:
        proc.send_signal(signal.SIGKILL)  # a holder that dies: the OS releases its lock
        proc.wait()
    result = train(data=data, artifacts=art, **FAST)
    assert result.complete and not lock.exists() and not (lock.parent / ".lock.holder").exists()


def test_a_fold_job_on_a_fold_being_trained_fails(data, art):
    proc = _hold(art / "runs" / "test_resnet" / runner.fold_lock(1))
    try:
        with pytest.raises(
            StackkitError, match=rf"run test_resnet fold 1 is being written by process {proc.pid} "
        ):
            runner.run_fold(data=data, fold=1, artifacts=art, **FAST)
        res = runner.run_fold(data=data, fold=0, artifacts=art, **FAST)  # another fold: fine
        assert res.trained
    finally:
        proc.kill()
        proc.wait()


def test_a_killed_cache_build_is_cleaned_up_on_the_next_start(data, art):
    _, job = runner.resolve_job("test_resnet", data, art, device="cpu")
    key = image_cache.cache_key(image_cache.key_record(*runner._cache_args(job)))
    root = image_cache.cache_root(art)
    stale = root / f".{key}.0123456789ab.tmp"  # store.atomic_dir's temporary, killed midway
    stale.mkdir(parents=True)
    (stale / image_cache.PIXELS).write_bytes(b"\x93NUMPY half of an image cache")
    old = time.time() - 3600
    os.utime(stale, (old, old))
    train(data=data, artifacts=art, folds="0", **FAST)
    assert sorted(p.name for p in root.iterdir()) == [key]  # only the whole cache
