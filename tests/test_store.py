"""The store: atomic writes, round trips, aligned run sets."""

from __future__ import annotations

import numpy as np
import pytest

from stackkit.contract.errors import StackkitError
from stackkit.contract.schema import validate_folds
from stackkit.contract.store import Store, atomic_dir, atomic_path


def test_atomic_path_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "f.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("boom")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.txt"]


def test_atomic_dir_replaces_whole(tmp_path):
    d = tmp_path / "ens"
    with atomic_dir(d) as tmp:
        (tmp / "a").write_text("1")
    with pytest.raises(RuntimeError), atomic_dir(d) as tmp:
        (tmp / "b").write_text("2")
        raise RuntimeError
    assert sorted(p.name for p in d.iterdir()) == ["a"]
    with atomic_dir(d) as tmp:
        (tmp / "c").write_text("3")
    assert sorted(p.name for p in d.iterdir()) == ["c"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ens"]


def test_round_trip_and_alignment(store, small_case):
    folds = store.read_folds()
    assert folds.hash == small_case.folds.hash
    rs = store.load_runs(None, folds)
    assert rs.names == ["run00", "run01", "run02"]
    oof = small_case.oof["run01"]
    np.testing.assert_array_equal(
        rs.oof[1],
        oof.sort_values("sample_id")
        .set_index("sample_id")
        .loc[folds.frame["sample_id"]]
        .filter(like="logit_")
        .to_numpy(),
    )
    assert rs.test.shape == (3, 5, 140, 18)
    assert list(rs.test_ids) == sorted(rs.test_ids)


def test_load_order_does_not_matter(store):
    folds = store.read_folds()
    a = store.load_runs(["run02", "run00"], folds)
    b = store.load_runs(["run00", "run02"], folds)
    assert a.names == b.names
    np.testing.assert_array_equal(a.oof, b.oof)
    np.testing.assert_array_equal(a.test, b.test)


def test_shuffled_files_load_identically(store, small_case, tmp_path):
    import dataclasses

    other = Store(tmp_path / "other")
    f = small_case.folds
    shuffled = validate_folds(f.frame.sample(frac=1.0, random_state=3), f.metadata())
    dataclasses.replace(small_case, folds=shuffled).write(other)
    a = store.load_runs(None, store.read_folds())
    b = other.load_runs(None, other.read_folds())
    ia = a.folds.frame["sample_id"].to_numpy()
    ib = b.folds.frame["sample_id"].to_numpy()
    order = {s: i for i, s in enumerate(ib)}
    perm = np.array([order[s] for s in ia])
    np.testing.assert_array_equal(a.oof, b.oof[:, perm])


def test_refuses_to_replace_folds_runs_were_made_on(store, small_case):
    from stackkit.data.folds import make_folds

    f = small_case.folds.frame
    new = make_folds(f["sample_id"], f["group"], f["label"], small_case.folds.classes, 5, seed=99)
    with pytest.raises(StackkitError, match="were made on the current fold assignment"):
        store.write_folds(new)
    store.write_folds(new, force=True)
    assert store.read_folds().hash == new.hash


def test_incomplete_run_is_not_listed(store):
    (store.run_dir("run02") / "run.json").unlink()
    assert store.run_names() == ["run00", "run01"]
    with pytest.raises(StackkitError, match=r"run\.json: missing; the run is incomplete"):
        store.read_run("run02", store.read_folds())


def test_load_runs_fast_path_equals_full_validation(store):
    """Runs after the first whose ids and folds repeat the first's are read without validating
    them again: the same arrays and hashes as each run loaded (and validated) alone; a run in
    another row order takes the full path to the same values; a non-finite logit in a later run
    is refused with the full path's message."""
    import pandas as pd

    folds = store.read_folds()
    names = store.run_names()
    calls = []
    fast = Store._read_run_fast
    Store._read_run_fast = lambda *a: calls.append(fast(*a)) or calls[-1]
    try:
        both = store.load_runs(names, folds)
    finally:
        Store._read_run_fast = fast
    assert len(calls) == len(names) - 1 and all(c is not None for c in calls)
    for i, name in enumerate(names):
        alone = store.load_runs([name], folds)
        np.testing.assert_array_equal(both.oof[i], alone.oof[0])
        np.testing.assert_array_equal(both.test[i], alone.test[0])
        assert both.hashes[name] == alone.hashes[name] == store.run_hash(name)
        assert both.infos[name] == alone.infos[name]
    last = store.run_dir(names[-1]) / "oof.parquet"
    df = pd.read_parquet(last)
    df.iloc[::-1].to_parquet(last, index=False)  # reversed rows: not the first run's order
    np.testing.assert_array_equal(store.load_runs(names, folds).oof[-1], both.oof[-1])
    df.loc[3, "logit_2"] = np.inf
    df.to_parquet(last, index=False)
    with pytest.raises(StackkitError) as many:
        store.load_runs(names, folds)
    with pytest.raises(StackkitError) as one:
        store.load_runs([names[-1]], folds)
    assert str(many.value) == str(one.value) and "logit_2 is inf" in str(one.value)


def test_fast_path_puts_rows_in_place_when_files_are_in_another_order(store, monkeypatch):
    """Every run's files in an order other than folds.parquet's (and test rows not fold-major):
    the fast path maps each file row to its place, as the full validation does run by run."""
    import pandas as pd

    folds = store.read_folds()
    names = store.run_names()
    order = {}
    for f in ("oof.parquet", "test.parquet"):  # the first run shuffled, the others likewise
        first = pd.read_parquet(store.run_dir(names[0]) / f)
        order[f] = first.iloc[np.random.default_rng(0).permutation(len(first))][
            ["sample_id", "fold"]
        ]
    for name in names:
        for f in ("oof.parquet", "test.parquet"):
            df = pd.read_parquet(store.run_dir(name) / f)
            order[f].merge(df, on=["sample_id", "fold"]).to_parquet(
                store.run_dir(name) / f, index=False
            )
    calls = []
    fast = Store._read_run_fast

    def spy(self, name, fo, keys, oof, test):
        calls.append((keys.oof_rows, keys.test_rows))
        got = fast(self, name, fo, keys, oof, test)
        calls[-1] += (got,)
        return got

    monkeypatch.setattr(Store, "_read_run_fast", spy)
    many = store.load_runs(names, folds)
    assert len(calls) == len(names) - 1 and all(c[-1] is not None for c in calls)
    assert calls[0][0] is not None and calls[0][1] is not None  # rows were mapped, not copied
    monkeypatch.undo()
    for i, name in enumerate(names):
        alone = store.load_runs([name], folds)
        np.testing.assert_array_equal(many.oof[i], alone.oof[0])
        np.testing.assert_array_equal(many.test[i], alone.test[0])


def test_first_run_is_validated_once_per_content(store, monkeypatch, tmp_path):
    """load_runs validates its first run in full once; the same bytes on the same folds are then
    read like the other runs (same arrays, hashes and infos); other bytes are validated again."""
    import pandas as pd

    monkeypatch.setenv("STACKKIT_CACHE", str(tmp_path / "cache"))
    folds = store.read_folds()
    names = store.run_names()
    known = []
    real = Store._read_run_known
    monkeypatch.setattr(Store, "_read_run_known", lambda *a: known.append(real(*a)) or known[-1])
    cold = store.load_runs(names, folds)
    assert known == [None]  # nothing validated yet
    warm = store.load_runs(names, folds)
    assert known[-1] is not None  # the first run's bytes passed before: not validated again
    np.testing.assert_array_equal(warm.oof, cold.oof)
    np.testing.assert_array_equal(warm.test, cold.test)
    np.testing.assert_array_equal(warm.test_ids, cold.test_ids)
    assert warm.hashes == cold.hashes and warm.infos == cold.infos
    # new bytes for the first run (a duplicated id): validated in full again, and refused
    path = store.run_dir(names[0]) / "oof.parquet"
    df = pd.read_parquet(path)
    df.loc[1, "sample_id"] = df.loc[0, "sample_id"]
    df.to_parquet(path, index=False)
    with pytest.raises(StackkitError, match=r"oof\.parquet"):
        store.load_runs(names, folds)
    assert known[-1] is None


def test_run_hash_is_remembered_by_stat_and_redone_after_a_write(store, monkeypatch, tmp_path):
    """The files' sha256 is computed once per (size, mtime, ctime, inode); a file written since
    is hashed again, and the hash is always the files' own (Store.run_hash)."""
    import os

    import pandas as pd

    from stackkit.contract import store as store_mod

    monkeypatch.setenv("STACKKIT_CACHE", str(tmp_path / "cache"))
    d = store.run_dir("run01")
    hashed = []
    real = store_mod._HASHER.submit
    monkeypatch.setattr(store_mod._HASHER, "submit", lambda *a: hashed.append(1) or real(*a))
    _, h1 = store_mod._read_hashed(d)
    assert h1 == store.run_hash("run01") and len(hashed) == 2
    _, h2 = store_mod._read_hashed(d)
    assert h2 == h1 and len(hashed) == 2  # remembered: not hashed again
    path = d / "test.parquet"
    df = pd.read_parquet(path)
    df["logit_0"] += 1.0
    st = path.stat()
    df.to_parquet(path, index=False)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))  # even with the old mtime put back
    _, h3 = store_mod._read_hashed(d)
    assert len(hashed) == 4 and h3 == store.run_hash("run01") != h1


def test_checked_runs_are_read_for_their_logits_alone(store, monkeypatch, tmp_path):
    """A later run whose bytes were found to repeat the first run's ids and folds is read for
    its logit columns alone next time (known by its remembered hash): the same arrays as a full
    reading. A file written since (new logits), or a first run whose rows moved, is read and
    checked in full again, and what is loaded is what the files hold."""
    import pandas as pd

    from stackkit.contract import store as store_mod

    monkeypatch.setenv("STACKKIT_CACHE", str(tmp_path / "cache"))
    folds = store.read_folds()
    names = store.run_names()
    read = []
    real = store_mod._read_logits
    monkeypatch.setattr(store_mod, "_read_logits", lambda *a: read.append(a[0].name) or real(*a))

    def alone(i):
        return store.load_runs([names[i]], folds)

    cold = store.load_runs(names, folds)
    assert read == []  # nothing checked before
    warm = store.load_runs(names, folds)
    assert read == names[1:]
    np.testing.assert_array_equal(warm.oof, cold.oof)
    np.testing.assert_array_equal(warm.test, cold.test)
    assert warm.hashes == cold.hashes and warm.infos == cold.infos
    path = store.run_dir(names[-1]) / "test.parquet"
    df = pd.read_parquet(path)
    df["logit_0"] += 1.0
    df.to_parquet(path, index=False)
    read.clear()
    again = store.load_runs(names, folds)
    assert read == names[1:-1]  # the rewritten run is read in full
    np.testing.assert_array_equal(again.test[-1], alone(-1).test[0])
    assert not np.array_equal(again.test[-1], warm.test[-1])
    first = store.run_dir(names[0]) / "oof.parquet"
    pd.read_parquet(first).iloc[::-1].to_parquet(first, index=False)
    read.clear()
    moved = store.load_runs(names, folds)
    assert read == []  # the others' rows no longer sit where the first run's do
    for i in range(len(names)):
        np.testing.assert_array_equal(moved.oof[i], alone(i).oof[0])
        np.testing.assert_array_equal(moved.test[i], alone(i).test[0])
