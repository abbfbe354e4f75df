"""stackkit.cv.shared: features built once, memory-mapped into the worker processes, and the
memory-saving paths (chunked features, float32 features for the trees) computing the same
numbers as the plain ones."""

from __future__ import annotations

import os

import numpy as np
import pytest

from stackkit.contract.store import Store
from stackkit.cv import shared, stacking
from stackkit.data.synthetic import make_case
from stackkit.meta import features as feats
from stackkit.meta.registry import make_learner


@pytest.fixture(scope="module")
def runset(tmp_path_factory):
    """150 people x 7 images, 4 runs of 18 classes, 5 folds."""
    store = Store(tmp_path_factory.mktemp("shared") / "artifacts")
    make_case(n_groups=150, n_test=120, n_runs=4, seed=3).write(store)
    return store.load_runs(None, store.read_folds())


def test_share_writes_a_read_only_memmap_and_keeps_small_arrays(tmp_path):
    big = np.arange(2 * shared.SHARE_FROM_BYTES // 4, dtype=np.float32).reshape(-1, 8)
    m = shared.share(big, tmp_path, "X")
    assert isinstance(m, np.memmap) and shared.is_shared(m) and not m.flags.writeable
    np.testing.assert_array_equal(m, big)
    assert shared.share(m, tmp_path) is m  # already a file's memmap: not written again
    small = np.ones((4, 8), np.float32)
    assert shared.share(small, tmp_path) is small and shared.share(None, tmp_path) is None


def test_scratch_is_under_the_cache_folder_and_removed(tmp_path, monkeypatch):
    monkeypatch.setenv("STACKKIT_CACHE", str(tmp_path))
    with shared.scratch() as folder:
        assert folder.parent == tmp_path / "shared"
        m = shared.share(np.ones((shared.SHARE_FROM_BYTES // 4, 1), np.float32), folder, "X")
    assert not folder.exists()
    assert float(m.sum()) == len(m)  # the mapping outlives the file


def test_features_into_a_folder_equal_the_in_memory_ones(runset, tmp_path):
    X, Xt = stacking.features(runset), stacking.test_features(runset)
    Xm, Xtm = stacking.features(runset, tmp_path), stacking.test_features(runset, tmp_path)
    assert shared.is_shared(Xm) and shared.is_shared(Xtm)
    np.testing.assert_array_equal(Xm, X)
    np.testing.assert_array_equal(Xtm, Xt)
    r, n, c = runset.oof.shape
    np.testing.assert_array_equal(X.reshape(n, r, c).transpose(1, 0, 2), runset.oof)


def test_workers_get_a_large_X_memory_mapped_not_copied(monkeypatch, tmp_path):
    def probe(est, X, y, train, test, tag=None, X_test=None):
        """Stands in for stacking._fit_predict in the workers (a local function: pickled by
        value): what X arrived as there."""
        import os

        import numpy as np

        seen = (os.getpid(), type(X).__name__, getattr(X, "filename", None), np.asarray(X).sum())
        return tag, test, seen, 0.0, None, []

    monkeypatch.setenv("STACKKIT_CACHE", str(tmp_path))
    monkeypatch.setattr(stacking, "_fit_predict", probe)
    X = np.random.default_rng(0).normal(size=(3000, 2 * 18 * 18)).astype(np.float32)  # 7.8 MB
    assert X.nbytes >= shared.SHARE_FROM_BYTES
    y = np.zeros(len(X), dtype=np.int64)
    tasks = [stacking.Task((k,), "lr", np.arange(k, len(X), 4), None) for k in range(4)]
    out = stacking.run_tasks(tasks, {"lr": None}, X, y, n_jobs=2)
    seen = [out[(k,)][1] for k in range(4)]
    assert {pid for pid, *_ in seen} - {os.getpid()}  # fitted in worker processes
    for _pid, kind, filename, total in seen:
        assert kind == "memmap"
        assert str(filename).startswith(str(tmp_path / "shared"))  # the file run_tasks wrote
        assert total == pytest.approx(float(X.sum()), rel=1e-6)
    assert not list((tmp_path / "shared").iterdir())  # and removed after the pool


def test_results_are_the_same_with_sharing_on_and_off(runset, monkeypatch):
    X, y, f, c = stacking.features(runset), runset.folds.labels, runset.folds.fold_ids, 18
    Xt = stacking.test_features(runset)
    metas = ["caruana", "lr", "knn", "rf"]
    monkeypatch.setattr(shared, "SHARE_FROM_BYTES", 1)  # every array through a file
    on = stacking.cross_val_many(metas, X, y, f, c, n_jobs=2, X_test=Xt)
    off = stacking.cross_val_many(metas, X, y, f, c, n_jobs=1, X_test=Xt)  # in this process
    for a, b in zip(on, off):
        np.testing.assert_allclose(a.oof_proba, b.oof_proba, rtol=0, atol=1e-12, err_msg=a.meta)
        np.testing.assert_allclose(a.refit[1], b.refit[1], rtol=0, atol=1e-12, err_msg=a.meta)


def test_chunked_features_equal_the_whole(runset, monkeypatch):
    X, y = stacking.features(runset), runset.folds.labels
    for kind, temperature, combine, factors in [
        ("logprob", False, "concat", "none"),
        ("proba", True, "both", "mask"),
        ("logprob", True, "mean", "mask"),
    ]:
        rf = feats.RunFeatures(18, kind, temperature, combine, factors).fit(X, y)
        whole = rf.transform(X)
        monkeypatch.setattr(feats, "CHUNK_ROWS", 7)  # many chunks, the last one short
        np.testing.assert_array_equal(rf.transform(X), whole)
        np.testing.assert_array_equal(rf.transform(X.astype(np.float64)), whole)
        assert rf.transform(X, dtype=np.float32).dtype == np.float32
        monkeypatch.undo()


@pytest.mark.parametrize("meta", ["rf", "xgboost", "knn"])
def test_float32_features_give_the_float64_results(runset, meta, monkeypatch):
    """The learners fitted on float32 features predict what they would on float64 ones: the trees
    cast to float32 themselves (the same numbers exactly), knn within 1e-6 (measured 1e-8)."""
    X, y, f = stacking.features(runset), runset.folds.labels, runset.folds.fold_ids
    est = make_learner(meta, n_classes=18)
    assert est._feature_dtype == np.float32
    p32 = est.fit(X[f != 0], y[f != 0]).predict_proba(X[f == 0])
    monkeypatch.setattr(type(est), "_feature_dtype", np.float64)
    p64 = make_learner(meta, n_classes=18).fit(X[f != 0], y[f != 0]).predict_proba(X[f == 0])
    np.testing.assert_allclose(p32, p64, rtol=0, atol=0 if meta != "knn" else 1e-6)


@pytest.mark.parametrize("meta", ["lr", "svm", "knn", "xgboost"])
def test_fitting_on_rows_in_place_equals_fitting_on_their_copy(runset, meta):
    """What the workers do (fit(X, y, rows=train), the rows read from the shared X a chunk at a
    time) is what fitting on X[train] does, number for number."""
    X, y, f = stacking.features(runset), runset.folds.labels, runset.folds.fold_ids
    train = np.flatnonzero(f != 2)
    a = make_learner(meta, n_classes=18).fit(X, y, rows=train)
    b = make_learner(meta, n_classes=18).fit(X[train], y[train])
    np.testing.assert_array_equal(a.predict_proba(X[f == 2]), b.predict_proba(X[f == 2]))
    np.testing.assert_array_equal(a.run_weights_, b.run_weights_)


def test_scratch_removes_the_folders_of_processes_gone(tmp_path, monkeypatch):
    import socket
    import subprocess
    import sys

    monkeypatch.setenv("STACKKIT_CACHE", str(tmp_path))
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    host = socket.gethostname()
    root = tmp_path / "shared"
    left = root / f"{dead}@{host}-abc123"  # killed before it could clean up
    mine = root / f"{os.getpid()}@{host}-def456"  # alive: this process
    other = root / f"{dead}@another-host-ghi789"  # another host's: never asked
    for d in (left, mine, other):
        d.mkdir(parents=True)
        (d / "X.npy").write_bytes(b"x")
    with shared.scratch() as folder:
        assert folder.name.startswith(f"{os.getpid()}@{host}-")
    assert not left.exists() and mine.exists() and other.exists()
