"""`stackkit folds`: folds.parquet from a data folder, through the CLI."""

from __future__ import annotations

from pathlib import Path

from imagedata import make_mask_data
from typer.testing import CliRunner

from stackkit.cli import app
from stackkit.contract.store import Store

runner = CliRunner()


def test_folds_writes_groups_whole_with_data_metadata(tmp_path):
    data = make_mask_data(tmp_path / "data", n_people=12, n_test=3)
    art = tmp_path / "art"
    res = runner.invoke(
        app, ["folds", "--data", str(data), "--artifacts", str(art), "--n-folds", "3"]
    )
    assert res.exit_code == 0, res.output
    assert "84 samples, 12 groups, 18 classes -> 3 folds" in res.output
    folds = Store(art).read_folds()
    assert folds.meta["data"]["layout"] == "mask"
    assert Path(folds.meta["data"]["root"]) == data.resolve()
    assert (folds.frame.groupby("group")["fold"].nunique() == 1).all()


def test_folds_refuses_to_orphan_runs_unless_forced(tmp_path, small_case):
    data = make_mask_data(tmp_path / "data", n_people=12, n_test=3)
    store = Store(tmp_path / "art")
    small_case.write(store)  # other folds with runs made on them
    args = ["folds", "--data", str(data), "--artifacts", str(store.root)]
    res = runner.invoke(app, args)
    assert res.exit_code == 1 and "pass --force" in res.output
    assert "Traceback" not in res.output
    assert runner.invoke(app, [*args, "--force"]).exit_code == 0
    assert len(store.read_folds().frame) == 84


def test_folds_missing_data_is_one_line(tmp_path):
    res = runner.invoke(
        app, ["folds", "--data", str(tmp_path / "nope"), "--artifacts", str(tmp_path)]
    )
    assert res.exit_code == 1
    assert res.output.strip().startswith("error:") and "data folder not found" in res.output


def test_a_rare_class_is_said_once_without_scikit_learn_warnings(caplog):
    """Classes with fewer samples than folds: one log line of ours, no third-party warning."""
    import warnings

    from stackkit.data.folds import make_folds

    ids = [f"s{i}" for i in range(40)]
    labels = [0] * 20 + [1] * 18 + [2] * 2  # class 2 has 2 samples for 5 folds
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        folds = make_folds(ids, None, labels, ["a", "b", "c"], n_folds=5, seed=0)
    assert folds.n_folds == 5
    assert any("fewer samples than the 5 folds (c)" in r.getMessage() for r in caplog.records)
