"""Bad values, one row each (issue 11): every one is refused in one line naming the option or
the file, with a non-zero exit, no traceback and nothing written. Rows marked ``early`` must be
refused before any work: before a run is read (``Store.load_runs`` and ``Store.read_run`` are
booby-trapped for them)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
from typer.testing import CliRunner

from stackkit.cli import app
from stackkit.contract.store import Store


@dataclass
class Ctx:
    store: Store
    tmp: Path
    case: object  # the small synthetic case of conftest (folds, runs' frames)


def fit(*args):
    return lambda ctx: ["fit", "--meta", "lr", *args]


# --------------------------------------------------------------------------------------------
# the table: (id, command builder, substrings of the one-line error, refused before any work)

CASES = [
    ("param-text", fit("--param", "lr.C=abc"),
     ["--param lr.C=abc", "'C' parameter of LRLearner", "Got 'abc'"], True),
    ("param-negative", fit("--param", "lr.C=-1"), ["--param lr.C=-1", "(0.0, inf]"], True),
    ("param-nan", fit("--param", "lr.C=nan"), ["--param lr.C=nan", "Got nan"], True),
    ("param-float-for-int", fit("--param", "rf.n_estimators=1.5", "--meta", "rf"),
     ["--param rf.n_estimators=1.5", "must be an int in the range [1, inf)"], True),
    ("param-xgboost-range", fit("--param", "xgboost.max_depth=-3", "--meta", "xgboost"),
     ["--param xgboost.max_depth=-3", "'max_depth' parameter of XGBLearner"], True),
    ("param-caruana-text", fit("--param", "caruana.max_iter=abc", "--meta", "caruana"),
     ["--param caruana.max_iter=abc", "'max_iter' parameter of CaruanaSelection"], True),
    ("param-features", fit("--param", "lr.features=bogus"),
     ["--param lr.features=bogus", "'features' parameter", "'logprob'"], True),
    ("param-n-jobs-text", fit("--param", "lr.n_jobs=abc"), ["--param lr.n_jobs=abc"], True),
    ("param-knn-zero", fit("--param", "knn.n_neighbors=0", "--meta", "knn"),
     ["--param knn.n_neighbors=0", "[1, inf)"], True),
    ("param-knn-too-many", fit("--param", "knn.n_neighbors=100000", "--meta", "knn"),
     ["--param knn.n_neighbors=100000", "smallest training split"], True),
    ("param-learner-not-fitted", fit("--param", "rf.n_estimators=abc", "--meta", "vote"),
     ["--param rf.n_estimators=abc"], True),
    ("param-unknown-name", fit("--param", "lr.Cee=1"), ["--param lr.Cee", "no parameter"], True),
    ("param-leaderboard", lambda ctx: ["leaderboard", "--param", "svm.C=0"],
     ["--param svm.C=0", "'C' parameter of SVMLearner"], True),
    ("n-jobs-zero", fit("--n-jobs", "0"), ["--n-jobs 0"], True),
    ("n-jobs-zero-leaderboard", lambda ctx: ["leaderboard", "--n-jobs", "0"], ["--n-jobs 0"], True),
]  # fmt: skip


@pytest.fixture
def booby_trap(monkeypatch):
    """Make reading a run fail loudly: an early refusal never gets there."""

    def boom(*args, **kwargs):
        raise AssertionError("a run was read before the bad value was refused")

    def arm():
        monkeypatch.setattr(Store, "load_runs", boom)
        monkeypatch.setattr(Store, "read_run", boom)

    return arm


def _tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


@pytest.mark.parametrize(("build", "expected", "early"), [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])  # fmt: skip
def test_bad_value_is_refused_in_one_line(store, small_case, tmp_path, booby_trap, build,
                                          expected, early):  # fmt: skip
    ctx = Ctx(store, tmp_path, small_case)
    args = build(ctx)
    before = _tree(store.root)
    if early:
        booby_trap()
    result = CliRunner().invoke(app, [*args, "--artifacts", str(store.root), "--no-cache"]
                                if args[0] in ("fit", "leaderboard")
                                else [*args, "--artifacts", str(store.root)])  # fmt: skip
    assert result.exit_code == 1, result.output
    err = result.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), result.output
    assert "Traceback" not in result.output
    for part in expected:
        assert part in err[-1], f"{part!r} not in {err[-1]!r}"
    assert _tree(store.root) == before  # nothing written
