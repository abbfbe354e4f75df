"""The notebook's loop through ``import stackkit`` alone (stackkit/api.py, stackkit/__init__.py):
open a folder, load runs, fit with and without writing, the leaderboard and a comparison as
DataFrames, pseudo labels, the report; every result shows as an HTML table in Jupyter."""

from __future__ import annotations

import inspect
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

import stackkit
from stackkit.data.synthetic import make_case

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def art(tmp_path_factory):
    root = tmp_path_factory.mktemp("api") / "artifacts"
    art = stackkit.open(root)
    make_case(n_groups=60, n_test=70, n_runs=3, seed=2).write(art.store)
    return art


def _is_table(html: str) -> bool:
    return "<table" in html and "</table>" in html and "<td>" in html


def test_the_whole_loop_through_the_api(art, monkeypatch, tmp_path):
    monkeypatch.setenv("STACKKIT_CACHE", str(tmp_path / "cache"))
    runs = art.runs()
    assert list(runs["run"]) == ["run00", "run01", "run02"]
    assert set(runs["state"]) == {"complete"} and _is_table(art._repr_html_())
    rs = art.load_runs(exclude=["run02"])
    assert rs.names == ["run00", "run01"] and rs.oof.shape[:2] == (2, len(rs.folds.frame))

    # a fit that writes nothing, then the same fit written: the same decision
    dry = art.fit(meta="vote,lr,caruana", name="nb", write=False)
    assert not dry.written and not art.store.ensemble_dir("nb").exists()
    res = art.fit(meta="vote,lr,caruana", name="nb")
    assert res.written and (res.path / "ensemble.json").is_file()
    assert res.selected.meta == dry.selected.meta
    assert res.estimate.macro_f1 == pytest.approx(dry.estimate.macro_f1)
    frame = res.to_frame()
    assert list(frame["meta"]) == ["vote", "lr", "caruana"]
    assert frame["picked"].sum() == 1
    assert frame.loc[frame["picked"], "meta"].item() == res.selected.meta
    picked = frame.loc[frame["picked"], "cv_macro_f1"].item()
    assert picked == pytest.approx(res.selected.scores["macro_f1"])
    html = res._repr_html_()
    assert _is_table(html) and f"picked {res.selected.meta}" in html
    assert res.note is None or "below the best single run" in html  # said where it is seen

    board = art.leaderboard(meta="vote,lr")
    cands = board.to_frame()
    assert list(cands.columns[:2]) == ["meta", "cv_macro_f1"]
    assert cands["cv_macro_f1"].is_monotonic_decreasing and cands["best"].iloc[0]
    per_run = board.to_frame("runs")
    assert list(per_run["run"]) == ["run00", "run01", "run02"] and "loro_delta" in per_run
    assert _is_table(board._repr_html_()) and "runs (own OOF predictions)" in board._repr_html_()
    with pytest.raises(stackkit.StackkitError, match="which is 'candidates' or 'runs'"):
        board.to_frame("folds")

    cmp = art.compare("nb", "run01", n_boot=200)
    row = cmp.to_frame().iloc[0]
    assert (row["a"], row["b"]) == ("nb", "run01")
    assert row["diff"] == pytest.approx(row["a_score"] - row["b_score"])
    assert row["low"] <= row["diff"] <= row["high"] and _is_table(cmp._repr_html_())

    ps = art.pseudo_label("nb", threshold=0.5)
    assert isinstance(ps.to_frame(), pd.DataFrame) and ps.to_frame()["chosen"].sum() == len(
        ps.frame
    )
    assert (art.root / "pseudo" / "nb" / "pseudo.parquet").is_file() and _is_table(ps._repr_html_())

    page = art.report("nb", out=tmp_path / "nb.html")
    assert page == tmp_path / "nb.html" and "<html" in page.read_text()[:200].lower()


def test_make_learner_is_a_scikit_learn_estimator_with_checked_params():
    from sklearn.base import clone

    lr = stackkit.make_learner("lr", n_classes=3, C=0.5)
    assert clone(lr).get_params()["C"] == 0.5
    with pytest.raises(stackkit.StackkitError, match="lr has no parameter 'nope'"):
        stackkit.make_learner("lr", n_classes=3, nope=1)


def test_defaults_match_the_library():
    from stackkit.compare import N_BOOT
    from stackkit.pseudo import DEFAULT_THRESHOLD

    A = stackkit.Artifacts
    assert inspect.signature(A.compare).parameters["n_boot"].default == N_BOOT
    assert inspect.signature(A.pseudo_label).parameters["threshold"].default == DEFAULT_THRESHOLD


def test_every_public_name_has_a_docstring_with_an_example():
    for name in stackkit.__all__:
        obj = getattr(stackkit, name)
        if name == "StackkitError":
            continue
        assert ">>>" in (inspect.getdoc(obj) or ""), name
    for name, fn in inspect.getmembers(stackkit.Artifacts, inspect.isfunction):
        if not name.startswith("_"):
            assert ">>>" in inspect.getdoc(fn), f"Artifacts.{name}"
    assert "open" in dir(stackkit)


def test_import_stackkit_stays_light():
    code = ("import sys, stackkit; a = stackkit.open('x'); "
            "print(','.join(sorted(m for m in ('sklearn', 'torch', 'timm', 'base_models', "
            "'matplotlib', 'rich') if m in sys.modules)))")  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                         check=True)  # fmt: skip
    assert out.stdout.strip() == ""
