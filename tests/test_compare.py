"""stackkit.compare: the paired group bootstrap of macro-F1 differences."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import f1_score

from stackkit import compare as cmp
from stackkit import metrics
from stackkit.contract.errors import StackkitError


def _onehot(pred: np.ndarray, c: int) -> np.ndarray:
    return np.eye(c)[pred]


def _flip(rng, y: np.ndarray, rate: float, c: int) -> np.ndarray:
    """Predictions wrong on a ``rate`` share of samples, the wrong class uniform among the rest."""
    wrong = rng.random(len(y)) < rate
    return np.where(wrong, (y + rng.integers(1, c, len(y))) % c, y)


def test_weighted_tallies_match_sklearn_with_sample_weights(rng):
    c, n = 5, 600
    y, pred = rng.integers(0, c, n), rng.integers(0, c, n)
    groups = rng.integers(0, 80, n)
    tp, pc, tc = cmp.group_tallies(y, pred, groups, c)
    w = rng.integers(0, 4, 80).astype(float)  # a bootstrap replicate: counts per group
    ours = metrics.macro_f1_from_counts(w @ tp, w @ pc, w @ tc)
    ref = f1_score(y, pred, labels=range(c), average="macro", sample_weight=w[groups],
                   zero_division=0)  # fmt: skip
    assert ours == pytest.approx(ref, abs=1e-12)


def test_draw_counts_are_multinomial_draws_of_all_groups(rng):
    w = cmp._draw_counts(rng, 300, 50)
    assert w.shape == (300, 50) and (w.sum(axis=1) == 50).all()
    assert abs(w.mean() - 1.0) < 0.02 and abs(w.var() - (1 - 1 / 50)) < 0.1


def test_interval_covers_a_known_difference():
    """Two balanced classes with symmetric errors: macro-F1 = 1 - error rate, so A (5% wrong)
    beats B (12% wrong) by 0.07 in the population; most 95% intervals must cover it."""
    rng = np.random.default_rng(3)
    covered = []
    for _ in range(40):
        groups = np.repeat(np.arange(300), 4)
        y = rng.integers(0, 2, len(groups))
        a, b = _flip(rng, y, 0.05, 2), _flip(rng, y, 0.12, 2)
        res = cmp.compare_arrays(y, _onehot(a, 2), _onehot(b, 2), groups, n_boot=400, seed=1)
        covered.append(res.low <= 0.07 <= res.high)
        assert res.low <= res.diff <= res.high
    assert np.mean(covered) >= 0.85


def test_large_difference_is_narrow_and_clear(rng):
    groups = np.repeat(np.arange(400), 5)
    y = rng.integers(0, 18, len(groups))
    res = cmp.compare_arrays(y, _onehot(_flip(rng, y, 0.05, 18), 18),
                             _onehot(_flip(rng, y, 0.45, 18), 18), groups, "good", "bad")  # fmt: skip
    assert res.diff > 0.3 and res.low > 0.3
    assert res.high - res.low < 0.08
    assert "excludes 0" in res.sentence and "good is better" in res.sentence
    assert res.p_value < 0.01


def test_identical_predictions_are_noise(rng):
    y = rng.integers(0, 4, 200)
    p = _onehot(_flip(rng, y, 0.3, 4), 4)
    res = cmp.compare_arrays(y, p, p, np.arange(200), n_boot=200)
    assert res.diff == 0 and res.low == 0 and res.high == 0
    assert "not distinguishable from noise" in res.sentence and res.p_value == 1.0


def test_groups_are_resampled_whole(rng):
    """Errors shared inside big groups: resampling rows pretends the samples are independent
    and gives a far narrower interval than resampling the people."""
    n_groups, size = 40, 25
    groups = np.repeat(np.arange(n_groups), size)
    y = rng.integers(0, 3, len(groups))
    a_wrong = np.repeat(rng.random(n_groups) < 0.3, size)  # A fails on whole people
    a = np.where(a_wrong, (y + 1) % 3, y)
    b = _flip(rng, y, 0.3, 3)
    pa, pb = _onehot(a, 3), _onehot(b, 3)
    by_group = cmp.compare_arrays(y, pa, pb, groups, n_boot=1000)
    by_row = cmp.compare_arrays(y, pa, pb, np.arange(len(y)), n_boot=1000)
    assert by_group.diff == by_row.diff
    assert (by_group.high - by_group.low) > 2.0 * (by_row.high - by_row.low)
    assert by_group.n_groups == n_groups and by_row.n_groups == len(y)


def test_swapping_a_and_b_mirrors_the_interval(rng):
    y = rng.integers(0, 6, 300)
    groups = rng.integers(0, 60, 300).astype(str)
    pa, pb = _onehot(_flip(rng, y, 0.2, 6), 6), _onehot(_flip(rng, y, 0.3, 6), 6)
    ab = cmp.compare_arrays(y, pa, pb, groups, n_boot=500, seed=4)
    ba = cmp.compare_arrays(y, pb, pa, groups, n_boot=500, seed=4)
    assert ab.diff == pytest.approx(-ba.diff)
    assert (ab.low, ab.high) == pytest.approx((-ba.high, -ba.low))


def test_compare_two_runs_of_a_store(store):
    res = cmp.compare(store, "run00", "run02", n_boot=500)
    assert res.a == "run00" and res.n_groups == 120
    assert res.diff > 0 and res.low > 0  # run00 is the strongest synthetic run by far
    again = cmp.compare(store, "runs/run00", "runs/run02", n_boot=500)
    assert (again.diff, again.low, again.high) == (res.diff, res.low, res.high)


@pytest.mark.parametrize(
    ("a", "b", "n_boot", "message"),
    [
        ("nope", "run00", 500, "neither an ensemble"),
        ("run00", "ensembles/run01", 500, "file not found"),
        ("run00", "run01", 10, "at least 100"),
    ],
)
def test_bad_requests_name_the_problem(store, a, b, n_boot, message):
    with pytest.raises(StackkitError, match=message):
        cmp.compare(store, a, b, n_boot=n_boot)


def test_macro_f1_from_counts_matches_scikit_learn():
    """The one counts-based macro-F1 (metrics.macro_f1_from_counts) that caruana, bias tuning and
    the bootstrap share equals scikit-learn's macro-F1 over every label, absent classes included."""

    rng = np.random.default_rng(3)
    for c in (2, 6, 18):
        y = rng.integers(0, c - 1, 500)  # the last class never true
        pred = rng.integers(0, c, 500)
        tp = np.bincount(y[pred == y], minlength=c)
        got = metrics.macro_f1_from_counts(
            tp, np.bincount(pred, minlength=c), np.bincount(y, minlength=c)
        )
        want = f1_score(y, pred, labels=np.arange(c), average="macro", zero_division=0)
        assert got == pytest.approx(want, abs=1e-12)


# --------------------------------------------------------------------------------------------
# an ensemble enters with its honest estimate, its choice redone in every resample


def _noise_draw(seed, n=1400, c=18, n_cand=12):
    """Labels, grouped folds and ``n_cand`` candidates that know nothing of the labels; a run
    that knows nothing either."""
    from stackkit.cv.result import CVResult
    from stackkit.meta.bias import score_labels

    rng = np.random.default_rng(100 + seed)
    y = rng.choice(c, n, p=np.r_[np.full(6, 0.1), np.full(12, 0.4 / 12)])
    groups = np.repeat(np.arange(n // 7), 7)
    folds = np.repeat(rng.permutation(np.arange(n // 7) % 5), 7)
    cands = [CVResult(f"c{i}", rng.dirichlet(np.full(c, 0.5), n), {}, 0.0) for i in range(n_cand)]
    for r in cands:  # macro-F1 from counts (equal to sklearn's: tests/test_decision.py)
        r.scores["macro_f1"] = score_labels(y, r.oof_proba.argmax(1), c)
    return y, groups, folds, cands, rng.dirichlet(np.full(c, 0.5), n)


def test_noise_ensembles_are_not_called_better_than_noise():
    """60 pure-noise draws of an ensemble (the best of 12 candidates) against a noise run: the
    pick's own CV predictions are called "better beyond resampling noise" far more often than
    the nominal 5% (what `--compare` did); the honest estimate's predictions, with the choice
    redone in every resample, at most at the nominal rate."""
    from stackkit.cv.estimate import estimate
    from stackkit.cv.stacking import choose

    seeds, called_pick, called_est = 60, 0, 0
    for seed in range(seeds):
        y, groups, folds, cands, run = _noise_draw(seed)
        est = estimate(cands, y, folds, 18)
        names = [r.meta for r in cands]
        resel = cmp.Reselect(np.vstack([r.oof_proba.argmax(1) for r in cands]),
                             est.proba.argmax(1), np.array([names.index(p) for p in est.picks]),
                             folds)  # fmt: skip
        a = cmp.compare_arrays(y, choose(cands).oof_proba, run, groups, n_boot=1000)
        b = cmp.compare_arrays(y, est.proba, run, groups, n_boot=1000, reselect_a=resel)
        called_pick += a.low > 0 or a.high < 0
        called_est += b.low > 0 or b.high < 0
    assert called_pick / seeds > 0.1, called_pick
    assert called_est / seeds <= 0.05, called_est


def test_reselect_with_one_candidate_is_the_plain_bootstrap(rng):
    """With a single candidate there is nothing to choose: the resampled tallies are the plain
    ones, so the replicate differences are the same."""
    c, n = 5, 350
    y = rng.integers(0, c, n)
    groups = np.repeat(np.arange(n // 7), 7)
    folds = np.repeat(np.arange(n // 7) % 5, 7)
    pa, pb = _flip(rng, y, 0.3, c), _flip(rng, y, 0.4, c)
    resel = cmp.Reselect(pa[None], pa, np.zeros(5, int), folds)
    plain = cmp.paired_bootstrap(y, pa, pb, groups, c, n_boot=300)
    again = cmp.paired_bootstrap(y, pa, pb, groups, c, n_boot=300, reselect_a=resel)
    np.testing.assert_allclose(again, plain, atol=1e-12)


def test_an_ensemble_enters_with_its_estimate(store, tmp_path, monkeypatch):
    import json

    from stackkit.fit import fit_ensemble

    monkeypatch.setenv("STACKKIT_CACHE", str(tmp_path / "cache"))
    fit_ensemble(store, meta="vote,lr,caruana", name="e")
    ens = json.loads((store.ensemble_dir("e") / "ensemble.json").read_text())
    res = cmp.compare(store, "e", "run01", n_boot=300)
    assert res.a_score == pytest.approx(ens["scores"]["estimate_macro_f1"], abs=1e-12)
    assert "predictions behind its honest estimate" in res.sentence
    # an ensemble written before the estimate existed: its own predictions, and a warning
    for f in ("estimate_oof_proba.parquet", "estimate_candidates.parquet"):
        (store.ensemble_dir("e") / f).unlink()
    old = cmp.compare(store, "e", "run01", n_boot=300)
    assert old.a_score == pytest.approx(ens["scores"]["final_oof_macro_f1"], abs=1e-12)
    assert "predates the honest estimate" in old.sentence
