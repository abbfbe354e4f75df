"""stackkit.metrics against the references it replaces: scikit-learn's f1_score and log_loss,
scipy's softmax and log_softmax (metrics itself imports neither, so the warm leaderboard does not
pay for them: test_light_imports below)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from scipy import special
from sklearn.metrics import f1_score
from sklearn.metrics import log_loss as sk_log_loss

from stackkit import metrics


@pytest.mark.parametrize("seed", range(5))
def test_macro_f1_matches_scikit_learn(seed):
    rng = np.random.default_rng(seed)
    c = int(rng.integers(2, 20))
    n = int(rng.integers(1, 400))
    y = rng.integers(0, c, n)
    pred = np.where(rng.random(n) < 0.5, y, rng.integers(0, c, n))
    if seed == 0:  # a class neither true nor predicted still counts (as 0)
        y, pred = y % (c - 1), pred % (c - 1)
    want = f1_score(y, pred, labels=np.arange(c), average="macro", zero_division=0)
    assert metrics.macro_f1(y, pred, c) == pytest.approx(want, abs=1e-12)
    assert metrics.macro_f1(y.astype(np.int16), pred.astype(np.float64), c) == pytest.approx(
        want, abs=1e-12
    )


def test_macro_f1_hand_computed_and_refusals():
    # class 0: tp 1, predicted 2, true 1 -> 2/3; class 1: tp 1, predicted 1, true 2 -> 2/3;
    # class 2: never true nor predicted -> 0
    assert metrics.macro_f1(np.array([0, 1, 1]), np.array([0, 0, 1]), 3) == pytest.approx(4 / 9)
    with pytest.raises(ValueError, match="outside"):
        metrics.macro_f1(np.array([0, 3]), np.array([0, 1]), 3)
    with pytest.raises(ValueError, match="labels against"):
        metrics.macro_f1(np.array([0, 1]), np.array([0]), 3)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_softmax_and_log_softmax_match_scipy(dtype):
    rng = np.random.default_rng(1)
    z = (rng.normal(size=(50, 7)) * 30).astype(dtype)
    z[0] = [1000, -1000, 0, 5, 999, -3, 2]  # overflows without the max shift
    for axis in (-1, 0):
        ref = z.astype(np.float64)
        np.testing.assert_allclose(metrics.softmax(z, axis), special.softmax(ref, axis), atol=1e-15)
        np.testing.assert_allclose(
            metrics.log_softmax(z, axis), special.log_softmax(ref, axis), rtol=1e-12, atol=1e-12
        )
    before = z.copy()
    metrics.softmax(z), metrics.log_softmax(z)
    np.testing.assert_array_equal(z, before)  # the caller's array is never shifted in place
    assert metrics.softmax(z).dtype == np.float64


def test_log_loss_matches_scikit_learn():
    rng = np.random.default_rng(2)
    p = metrics.softmax(rng.normal(size=(200, 5)) * 3)
    y = rng.integers(0, 5, 200)
    assert metrics.log_loss(y, p) == pytest.approx(sk_log_loss(y, p, labels=range(5)), rel=1e-12)


def test_light_imports():
    """The warm leaderboard's modules import neither scikit-learn, scipy, joblib nor xgboost:
    importing scikit-learn alone takes longer than reading 10 runs (issue 14 item 2)."""
    code = (
        "import sys\n"
        "import stackkit.cli, stackkit.leaderboard, stackkit.fit, stackkit.metrics\n"
        "heavy = sorted({m.split('.')[0] for m in sys.modules} & "
        "{'sklearn', 'scipy', 'joblib', 'xgboost', 'torch'})\n"
        "print(','.join(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"heavy imports at module level: {out.stdout.strip()}"


def test_warm_leaderboard_imports_no_pandas(store, tmp_path, monkeypatch):
    """A warm `stackkit leaderboard` reads folds and runs with pyarrow and numpy alone: pandas
    (0.35 s to import, more than reading 10 runs), pyarrow.dataset (which imports pandas), and
    the heavy libraries above stay out of the process (issue 14 item 2)."""
    from stackkit.leaderboard import leaderboard

    monkeypatch.setenv("STACKKIT_CACHE", str(tmp_path / "cache"))
    leaderboard(store, meta="vote,lr", loro=False)  # warms the cache
    code = (
        "import sys\n"
        "from stackkit.cli import app\n"
        "app(['leaderboard', '--artifacts', sys.argv[1], '--meta', 'vote,lr', '--no-loro'], "
        "standalone_mode=False)\n"
        "heavy = {'pandas', 'pyarrow.dataset', 'sklearn', 'scipy', 'joblib', 'xgboost', 'tqdm'}\n"
        "print('loaded:', ','.join(sorted(m for m in heavy if m in sys.modules)))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(store.root)], capture_output=True, text=True, check=True
    )
    assert "meta candidates" in out.stdout  # the command ran in full
    assert out.stdout.splitlines()[-1] == "loaded: ", out.stdout.splitlines()[-1]
