"""`stackkit import`: parquet, CSV and .npy inputs, logits or probabilities."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from stackkit import metrics
from stackkit.cli import app
from stackkit.contract.errors import StackkitError
from stackkit.importer import import_run


@pytest.fixture
def source(store, small_case):
    """run00's logits as an external tool would hand them over."""
    oof = small_case.oof["run00"].sample(frac=1.0, random_state=0)  # any row order
    test = small_case.test["run00"]
    return oof, test


def _stored(store, run):
    folds = store.read_folds()
    return store.load_runs([run], folds)


def test_parquet_logits_round_trip(store, source, tmp_path):
    oof, test = source
    oof.to_parquet(tmp_path / "o.parquet")
    test.to_parquet(tmp_path / "t.parquet")
    import_run(store, "ext", tmp_path / "o.parquet", tmp_path / "t.parquet")
    a, b = _stored(store, "ext"), _stored(store, "run00")
    np.testing.assert_array_equal(a.oof, b.oof)
    np.testing.assert_array_equal(a.test, b.test)
    info = json.loads((store.run_dir("ext") / "run.json").read_text())
    y = store.read_folds().labels
    assert info["metrics"]["oof_macro_f1"] == pytest.approx(
        metrics.macro_f1(y, b.oof[0].argmax(1), 18), abs=1e-12
    )
    assert len(info["metrics"]["per_fold"]) == 5


def test_csv_probabilities_without_fold_column(store, source, tmp_path):
    oof, test = source
    p_oof = metrics.softmax(oof.filter(like="logit_").to_numpy())
    df = pd.DataFrame(p_oof, columns=[f"prob_{c}" for c in range(18)])
    df.insert(0, "sample_id", oof["sample_id"].to_numpy())
    df.to_csv(tmp_path / "o.csv", index=False)
    t0 = test[test["fold"] == 0]
    tdf = pd.DataFrame(metrics.softmax(t0.filter(like="logit_").to_numpy()))
    tdf.insert(0, "sample_id", t0["sample_id"].to_numpy())
    tdf.to_csv(tmp_path / "t.csv", index=False)
    result = CliRunner().invoke(
        app,
        ["import", "extp", "--oof", str(tmp_path / "o.csv"), "--test", str(tmp_path / "t.csv"),
         "--kind", "proba", "--made-on-these-folds", "--artifacts", str(store.root)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "imported run 'extp'" in result.stdout
    a, b = _stored(store, "extp"), _stored(store, "run00")
    np.testing.assert_allclose(metrics.softmax(a.oof[0]), metrics.softmax(b.oof[0]), atol=1e-5)
    assert a.test.shape[1] == 5  # one copy per fold model
    np.testing.assert_array_equal(a.test[0, 0], a.test[0, 4])
    info = json.loads((store.run_dir("extp") / "run.json").read_text())
    assert (
        "declared by the user (--made-on-these-folds)" in (info["config"]["imported_from"]["folds"])
    )


def test_npy_with_id_lists(store, source, tmp_path):
    oof, test = source
    np.save(tmp_path / "o.npy", oof.filter(like="logit_").to_numpy())
    (tmp_path / "o.txt").write_text("\n".join(oof["sample_id"]) + "\n")
    ids = sorted(test["sample_id"].unique())
    stack = np.stack([
        test[test["fold"] == k].set_index("sample_id").loc[ids].filter(like="logit_").to_numpy()
        for k in range(5)
    ])  # fmt: skip
    np.save(tmp_path / "t.npy", stack)
    (tmp_path / "t.txt").write_text("\n".join(ids))
    import_run(store, "extn", tmp_path / "o.npy", tmp_path / "t.npy",
               oof_ids=tmp_path / "o.txt", test_ids=tmp_path / "t.txt",
               made_on_these_folds=True)  # fmt: skip
    a, b = _stored(store, "extn"), _stored(store, "run00")
    np.testing.assert_array_equal(a.oof, b.oof)
    np.testing.assert_array_equal(a.test, b.test)


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        (lambda o, t, d: (d / "o.txt", t), "unsupported file type '.txt'"),
        (lambda o, t, d: (o, d / "missing.parquet"), "missing.parquet: file not found"),
        (lambda o, t, d: (d / "o.npy", t), "needs its sample-id list"),
        (lambda o, t, d: (o.with_suffix(".bad.parquet"), t), "cannot be read"),
    ],
)
def test_bad_files(store, source, tmp_path, setup, message):
    oof, test = source
    oof.to_parquet(tmp_path / "o.parquet")
    test.to_parquet(tmp_path / "t.parquet")
    (tmp_path / "o.txt").write_text("x")
    np.save(tmp_path / "o.npy", np.zeros((3, 18)))
    (tmp_path / "o.bad.parquet").write_bytes(b"PAR1 not really")
    o, t = setup(tmp_path / "o.parquet", tmp_path / "t.parquet", tmp_path)
    with pytest.raises(StackkitError, match=None) as exc:
        import_run(store, "bad", o, t)
    assert message in str(exc.value)
    assert not store.run_dir("bad").exists()


def test_refuses_existing_run_and_nan(store, source, tmp_path):
    oof, test = source
    oof.to_parquet(tmp_path / "o.parquet")
    test.to_parquet(tmp_path / "t.parquet")
    with pytest.raises(StackkitError, match="already exists"):
        import_run(store, "run00", tmp_path / "o.parquet", tmp_path / "t.parquet")
    bad = oof.copy()
    bad.iloc[2, bad.columns.get_loc("logit_3")] = np.nan
    bad.to_parquet(tmp_path / "nan.parquet")
    with pytest.raises(StackkitError, match=r"row 2 .*logit_3 is nan"):
        import_run(store, "nanrun", tmp_path / "nan.parquet", tmp_path / "t.parquet")
    assert not store.run_dir("nanrun").exists()


def test_oof_made_on_another_split_is_refused(store, small_case, tmp_path):
    """Row-level 5-NN OOF (one person's images on both sides of each split) carries no fold
    column: refused by default, since nothing shows it was made on folds.parquet's folds; the
    declaration lets it in and run.json records it."""
    from sklearn.model_selection import KFold, cross_val_predict
    from sklearn.neighbors import KNeighborsClassifier

    folds = small_case.folds
    rng = np.random.default_rng(0)
    person = pd.factorize(folds.frame["group"])[0]
    X = rng.normal(size=(person.max() + 1, 8))[person] + 0.1 * rng.normal(size=(len(person), 8))
    y = folds.labels
    proba = cross_val_predict(KNeighborsClassifier(5), X, y, method="predict_proba",
                              cv=KFold(5, shuffle=True, random_state=0))  # fmt: skip
    oof = pd.DataFrame(proba, columns=[f"prob_{c}" for c in range(18)])
    oof.insert(0, "sample_id", folds.frame["sample_id"].to_numpy(dtype=object))
    oof.to_csv(tmp_path / "knn.csv", index=False)
    test = small_case.test["run00"]
    p_test = metrics.softmax(test.filter(like="logit_").to_numpy())
    test = test[["sample_id", "fold"]].join(
        pd.DataFrame(p_test, index=test.index).add_prefix("prob_")
    )
    test.to_parquet(tmp_path / "t.parquet")
    args = ["import", "knn", "--oof", str(tmp_path / "knn.csv"), "--test",
            str(tmp_path / "t.parquet"), "--kind", "proba", "--artifacts", str(store.root)]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1
    assert "no fold column" in result.stderr and "--made-on-these-folds" in result.stderr
    assert not store.run_dir("knn").exists()
    result = CliRunner().invoke(app, [*args, "--made-on-these-folds"])
    assert result.exit_code == 0, result.output
    info = json.loads((store.run_dir("knn") / "run.json").read_text())
    assert info["config"]["imported_from"]["folds"].startswith("declared by the user")


def test_fold_column_is_checked_not_declared(store, source, tmp_path):
    """With a fold column no declaration is needed: the folds are checked row by row."""
    oof, test = source
    oof.to_parquet(tmp_path / "o.parquet")
    test.to_parquet(tmp_path / "t.parquet")
    import_run(store, "withfolds", tmp_path / "o.parquet", tmp_path / "t.parquet")
    info = json.loads((store.run_dir("withfolds") / "run.json").read_text())
    assert info["config"]["imported_from"]["folds"] == "the OOF file's fold column"
    moved = oof.assign(fold=(oof["fold"] + 1) % 5)
    moved.to_parquet(tmp_path / "moved.parquet")
    with pytest.raises(StackkitError, match=r"disagrees with folds\.parquet"):
        import_run(store, "moved", tmp_path / "moved.parquet", tmp_path / "t.parquet")
