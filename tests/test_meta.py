"""stackkit.meta: the meta learners, their registry and --param parsing."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.base import BaseEstimator, ClassifierMixin, clone
from sklearn.ensemble import StackingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import PredefinedSplit, cross_val_predict
from sklearn.utils.estimator_checks import parametrize_with_checks
from threadpoolctl import threadpool_limits

from stackkit.contract import schema
from stackkit.contract.errors import StackkitError
from stackkit.meta.defaults import SIMPLICITY
from stackkit.meta.features import run_features, split_runs
from stackkit.meta.registry import make_learner, parse_params
from stackkit.meta.trees import cuda_available

C = 18
# small settings so that every learner fits in well under a second on the small case
FAST = {"rf": {"n_estimators": 20}, "xgboost": {"n_estimators": 10}}

LEARNERS = list(SIMPLICITY)


def _learner(name: str, **params):
    return make_learner(name, C, {**FAST.get(name, {}), **params})


@pytest.fixture(scope="module")
def data(small_case):
    """X (n, R*C) run-major logits in folds order, labels, fold ids."""
    folds = small_case.folds
    blocks = []
    for name in sorted(small_case.oof):
        o = small_case.oof[name]
        x = np.empty((len(folds.frame), C))
        pos = folds.index.get_indexer(o["sample_id"].to_numpy(dtype=object))
        x[pos] = o[schema.logit_columns(C)].to_numpy()
        blocks.append(x)
    return np.hstack(blocks), folds.labels, folds.fold_ids


# --------------------------------------------------------------------------------------------
# parity with scikit-learn's StackingClassifier


class _FixedColumns(ClassifierMixin, BaseEstimator):
    """A 'base model' whose predictions are fixed columns of X: stacking's internal
    cross_val_predict then yields exactly the stored OOF probabilities."""

    def __init__(self, columns=None):
        self.columns = columns

    def fit(self, X, y):
        self.classes_ = np.unique(y)
        return self

    def predict_proba(self, X):
        return np.asarray(X)[:, self.columns]

    def predict(self, X):
        return self.predict_proba(X).argmax(axis=1)


def test_lr_matches_sklearn_stacking(data):
    X, y, fold_ids = data
    assert len(np.unique(y)) == C  # multiclass: stacking keeps every probability column
    z = split_runs(X, C)
    P = run_features(z, "proba", None).reshape(len(X), -1)
    r = z.shape[1]
    plain = {"C": 1.0, "tol": 1e-8, "max_iter": 2000}
    base = [(f"run{i}", _FixedColumns(list(range(i * C, (i + 1) * C)))) for i in range(r)]
    stack = StackingClassifier(
        estimators=base,
        final_estimator=LogisticRegression(**plain),
        cv=PredefinedSplit(fold_ids),
        stack_method="predict_proba",
    )
    with threadpool_limits(1):
        stack.fit(P, y)
    ours = make_learner(
        "lr",
        C,
        dict(features="proba", temperature=False, combine="concat", standardize=False, **plain),
    ).fit(X, y)
    ref = stack.final_estimator_
    np.testing.assert_allclose(ours.model_.coef_, ref.coef_, rtol=0, atol=1e-8)
    np.testing.assert_allclose(ours.model_.intercept_, ref.intercept_, rtol=0, atol=1e-8)
    np.testing.assert_allclose(ours.predict_proba(X), stack.predict_proba(P), atol=1e-8)


# --------------------------------------------------------------------------------------------
# the protocol, for every learner


@pytest.mark.parametrize("name", LEARNERS)
def test_learner_protocol(name, data):
    X, y, fold_ids = data
    est = _learner(name)
    assert clone(est).get_params() == est.get_params()
    proba = cross_val_predict(est, X, y, cv=PredefinedSplit(fold_ids), method="predict_proba")
    assert proba.shape == (len(X), C)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-9)
    assert (proba >= 0).all()
    accuracy = np.mean(proba.argmax(axis=1) == y)
    assert accuracy > 0.5, f"{name}: OOF accuracy {accuracy:.3f}"

    est.fit(X, y)
    np.testing.assert_array_equal(est.classes_, np.arange(C))
    assert est.run_weights_.shape == (X.shape[1] // C,)
    assert (est.run_weights_ >= 0).all()
    assert est.run_weights_.sum() == pytest.approx(1.0)
    json.dumps(est.summary_())


@pytest.mark.parametrize("name", LEARNERS)
def test_missing_class_still_gets_a_column(name, data):
    X, y, _ = data
    missing = 8  # a rare class (60+, incorrect mask)
    keep = y != missing
    est = _learner(name).fit(X[keep], y[keep])
    proba = est.predict_proba(X)
    assert proba.shape == (len(X), C)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-9)
    np.testing.assert_array_equal(est.classes_, np.arange(C))
    assert est.predict(X).max() < C


@pytest.mark.parametrize("name", [n for n in SIMPLICITY if n not in ("vote", "caruana")])
def test_single_training_class(name, data):
    X = data[0]
    est = _learner(name).fit(X[:5], np.zeros(5, int))
    proba = est.predict_proba(X[:3])
    np.testing.assert_array_equal(proba[:, 0], 1.0)


@pytest.mark.parametrize("name", ["vote", "lr", "knn", "svm", "rf", "xgboost"])
def test_n_classes_inferred_and_checked(name, data):
    X, y, _ = data
    est = make_learner(name, C).set_params(n_classes=None)
    assert est.fit(X, y).n_classes_ == C  # every class present in the small case
    with pytest.raises(ValueError, match=r"X has n_features=54, not a whole number .*=5"):
        est.set_params(n_classes=5).fit(X, y % 5)


def test_svm_with_an_rbf_part(data):
    X, y, fold_ids = data
    tr, te = fold_ids != 0, fold_ids == 0
    est = _learner("svm", n_components=20).fit(X[tr], y[tr])
    assert est.summary_()["n_components"] == 20
    assert np.mean(est.predict(X[te]) == y[te]) > 0.5


# --------------------------------------------------------------------------------------------
# invariance: rows in another order, runs in another order


@pytest.mark.parametrize("name", ["vote", "lr", "knn"])
def test_row_order_changes_nothing(name, data, rng):
    """vote, lr and knn are deterministic in the set of rows. rf, xgboost and svm draw random
    row subsamples by position (bootstrap, subsample, Nystroem landmarks): another row order
    gives another, equally good draw, so they are left out."""
    X, y, fold_ids = data
    tr = np.flatnonzero(fold_ids != 0)
    perm = rng.permutation(tr)
    held_out = X[fold_ids == 0]
    a = _learner(name).fit(X[tr], y[tr]).predict_proba(held_out)
    b = _learner(name).fit(X[perm], y[perm]).predict_proba(held_out)
    np.testing.assert_allclose(a, b, atol=1e-6)


@pytest.mark.parametrize("name", ["vote", "lr", "knn", "svm"])
def test_run_order_changes_nothing(name, data):
    """Symmetric in the runs up to solver tolerance. rf and xgboost sample columns at random
    and break split ties by column index, so they depend on the run order; stackkit.store
    sorts runs by name, so one set of runs always meets them in one order."""
    X, y, _ = data
    r = X.shape[1] // C
    order = np.concatenate([np.arange(i * C, (i + 1) * C) for i in reversed(range(r))])
    a = _learner(name).fit(X, y)
    b = _learner(name).fit(X[:, order], y)
    np.testing.assert_allclose(a.predict_proba(X), b.predict_proba(X[:, order]), atol=1e-4)
    np.testing.assert_allclose(a.run_weights_, b.run_weights_[::-1], atol=1e-3)


# --------------------------------------------------------------------------------------------
# scikit-learn conformance: every learner through parametrize_with_checks

# X is R runs x C logits, run-major: a width that is not a whole number of runs is refused. The
# generic checks draw X of 2-10 raw features for 2-4 classes, so these fail on that rule alone;
# what they test (fit returns self, n_features_in_, read-only memmaps, any label type, NaN
# refused, clone) is tested below on logits of the right width instead.
_WIDTH = "X must be R runs x C logits wide; the check's X of raw features is not"
_EVERY = {
    check: _WIDTH
    for check in (
        "check_estimators_overwrite_params", "check_estimators_fit_returns_self",
        "check_readonly_memmap_input", "check_n_features_in_after_fitting",
        "check_positive_only_tag_during_fit", "check_estimators_dtypes", "check_dtype_object",
        "check_pipeline_consistency", "check_estimators_nan_inf", "check_estimators_pickle",
        "check_classifiers_classes", "check_classifiers_train",
    )
}  # fmt: skip
EXPECTED_FAILED = {
    "VoteLearner": _EVERY,
    "CaruanaSelection": {**_EVERY, "check_non_transformer_estimators_n_iter": _WIDTH},
    "LRLearner": {**_EVERY, "check_class_weight_classifiers": _WIDTH,
                  "check_non_transformer_estimators_n_iter": _WIDTH},
    "KNNLearner": _EVERY,
    "SVMLearner": {**_EVERY, "check_class_weight_classifiers": _WIDTH,
                   "check_non_transformer_estimators_n_iter": _WIDTH},
    "RFLearner": {**_EVERY, "check_class_weight_classifiers": "its 2 raw features are read as one "
                  "run's 2 logits, so the forest sees their softmax: the balanced-weight bar is "
                  "not reached"},
    "XGBLearner": {**_EVERY, "check_class_weight_classifiers": _WIDTH},
}  # fmt: skip
CHECK_SETTINGS = {"rf": {"n_estimators": 5}, "xgboost": {"n_estimators": 5}}


# the costliest checks, and those declared to fail, run with the slow tests only; every
# learner meets the rest (parameters, cloning, fitted state, labels, y checks, sparse and empty
# input, n_features_in_, one class, one sample) in the fast suite
SLOW_CHECKS = {
    "check_methods_subset_invariance", "check_methods_sample_order_invariance",
    "check_classifier_data_not_an_array", "check_fit_idempotent", "check_dict_unchanged",
    "check_fit_score_takes_y", "check_f_contiguous_array_estimator", "check_supervised_y_2d",
}  # fmt: skip
_CHECKS = parametrize_with_checks(
    [make_learner(n, 3, CHECK_SETTINGS.get(n)).set_params(n_classes=None) for n in LEARNERS],
    expected_failed_checks=lambda est: EXPECTED_FAILED[type(est).__name__],
)


def _check_param(p):
    # a declared failure comes as pytest.param(..., marks=xfail), the others as plain tuples
    (estimator, check), marks = (p.values, list(p.marks)) if hasattr(p, "marks") else (p, [])
    ids = _CHECKS.kwargs["ids"]
    name = ids(check).split("(")[0]
    if name in SLOW_CHECKS or name in EXPECTED_FAILED[type(estimator).__name__]:
        marks.append(pytest.mark.slow)
    return pytest.param(estimator, check, id=f"{ids(estimator)}-{ids(check)}", marks=marks)


@pytest.mark.parametrize(_CHECKS.args[0], [_check_param(p) for p in _CHECKS.args[1]])
def test_learners_pass_sklearn_checks(estimator, check):
    check(estimator)


@pytest.mark.parametrize("name", LEARNERS)
def test_any_label_type(name, data):
    """Labels are any type (classes_ the sorted distinct labels, as LabelEncoder gives them):
    class names give the same probabilities as the class indices, and predict returns names."""
    X, y, _ = data
    names = np.array([f"class-{c:02d}" for c in range(C)])
    by_index = _learner(name).set_params(n_classes=None).fit(X, y)
    by_name = _learner(name).set_params(n_classes=None).fit(X, names[y])
    np.testing.assert_array_equal(by_name.classes_, names)
    np.testing.assert_allclose(by_name.predict_proba(X), by_index.predict_proba(X), atol=1e-10)
    np.testing.assert_array_equal(by_name.predict(X), names[by_index.predict(X)])


@pytest.mark.parametrize("name", LEARNERS)
def test_fit_returns_self_and_reads_read_only_memmaps(name, data, tmp_path):
    X, y, _ = data
    path = tmp_path / "X.npy"
    np.save(path, X)
    Xm = np.load(path, mmap_mode="r")  # read-only, as joblib hands large arrays to workers
    est = _learner(name)
    assert est.fit(Xm, y) is est
    assert est.n_features_in_ == X.shape[1]
    np.testing.assert_allclose(est.predict_proba(Xm), _learner(name).fit(X, y).predict_proba(X))
    with pytest.raises(ValueError, match="Input X contains NaN"):
        _learner(name).fit(np.where(np.eye(*X.shape, dtype=bool), np.nan, X), y)


@pytest.mark.parametrize("name", LEARNERS)
def test_n_classes_fixes_the_labels(name, data):
    X, y, _ = data
    with pytest.raises(ValueError, match=r"with n_classes=18, y must hold the class indices 0..17"):
        _learner(name).fit(X, y + 1)


def _stack(final, n_classes):
    from sklearn.datasets import make_classification
    from sklearn.ensemble import StackingClassifier
    from sklearn.naive_bayes import GaussianNB

    X, y = make_classification(400, n_features=6, n_informative=4, n_classes=n_classes,
                               random_state=0)  # fmt: skip
    base = [("lr", LogisticRegression()), ("nb", GaussianNB())]
    return StackingClassifier(base, final_estimator=final, cv=5), X, y


@pytest.mark.parametrize("name", LEARNERS)
def test_as_stacking_final_estimator(name):
    """On a binary task StackingClassifier keeps one probability per model (VoteLearner
    (n_classes=2) read two models' columns as one run's logits and scored 0.42): refused, naming
    the cause. On a multiclass task each model's C probabilities pass as its run: it works."""
    for n_classes in (None, 2):
        stack, X, y = _stack(_learner(name).set_params(n_classes=n_classes), 2)
        with pytest.raises(ValueError, match="StackingClassifier keeps one column per model"):
            stack.fit(X, y)
    stack, X, y = _stack(_learner(name).set_params(n_classes=None), 3)
    assert stack.fit(X[:300], y[:300]).score(X[300:], y[300:]) > 0.6


# --------------------------------------------------------------------------------------------
# registry and --param parsing


def test_parse_params_types():
    got = parse_params(
        [
            "rf.n_estimators=300",
            "lr.C=0.5",
            "xgboost.max_depth=4",
            "knn.weights=distance",
            "lr.standardize=false",
            "rf.max_samples=none",
            "lr.C=1e-2",
        ]
    )
    assert got == {
        "rf": {"n_estimators": 300, "max_samples": None},
        "lr": {"C": 0.01, "standardize": False},
        "xgboost": {"max_depth": 4},
        "knn": {"weights": "distance"},
    }
    assert isinstance(got["rf"]["n_estimators"], int)


@pytest.mark.parametrize(
    "items, message",
    [
        (["rf.n_estimators"], r"--param 'rf.n_estimators': expected LEARNER.NAME=VALUE"),
        (["n_estimators=3"], r"expected LEARNER.NAME=VALUE"),
        (["rf.=3"], r"expected LEARNER.NAME=VALUE"),
        (["rf.n_estimators="], r"expected LEARNER.NAME=VALUE"),
        (["forest.n_estimators=3"], r"unknown meta learner 'forest' \(known: vote, caruana, lr"),
    ],
)
def test_parse_params_errors(items, message):
    with pytest.raises(StackkitError, match=message):
        parse_params(items)


@pytest.mark.parametrize(
    "name, params, message",
    [
        ("forest", None, r"unknown meta learner 'forest' \(known: vote, .*xgboost\)"),
        (
            "rf",
            {"n_estimatorz": 3},
            r"--param rf.n_estimatorz: rf has no parameter 'n_estimatorz' \(known: .*n_estimators",
        ),
        ("vote", {"C": 1.0}, r"--param vote.C: vote has no parameter 'C' \(known: \)"),
        ("lr", {"n_classes": 3}, r"--param lr.n_classes: lr has no parameter 'n_classes'"),
    ],
)
def test_make_learner_errors(name, params, message):
    with pytest.raises(StackkitError, match=message):
        make_learner(name, C, params)


def test_make_learner_sets_params_and_n_jobs():
    est = make_learner("rf", C, {"n_estimators": 7}, n_jobs=2)
    assert (est.n_classes, est.n_estimators, est.n_jobs) == (C, 7, 2)
    assert make_learner("rf", C, {"n_jobs": 1}, n_jobs=2).n_jobs == 1  # explicit wins
    assert make_learner("vote", C, n_jobs=2).get_params() == {"n_classes": C}


def test_rf_splitter_picks_the_forest():
    """rf's default is extremely randomized trees on all rows; splitter="best" is Breiman's
    random forest on bootstraps; both equal scikit-learn's own forest with the same settings."""
    from sklearn.ensemble import ExtraTreesClassifier, RandomForestClassifier

    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(300, 3 * 4)), rng.integers(0, 4, 300)
    common = dict(n_estimators=7, min_samples_leaf=1, max_features="sqrt", random_state=0,
                  class_weight="balanced_subsample")  # fmt: skip
    et = make_learner("rf", 4, {"n_estimators": 7, "features": "logprob"}).fit(X, y)
    assert isinstance(et.model_, ExtraTreesClassifier) and not et.model_.bootstrap
    Z = et.features_.transform(X)
    ref = ExtraTreesClassifier(bootstrap=False, **common).fit(Z, y)
    np.testing.assert_allclose(et.predict_proba(X), ref.predict_proba(Z))
    rf = make_learner("rf", 4, {"n_estimators": 7, "features": "logprob", "splitter": "best",
                                "max_samples": 0.5}).fit(X, y)  # fmt: skip
    assert isinstance(rf.model_, RandomForestClassifier)
    ref = RandomForestClassifier(max_samples=0.5, **common).fit(Z, y)
    np.testing.assert_allclose(rf.predict_proba(X), ref.predict_proba(Z))
    with pytest.raises(StackkitError, match=r"--param rf.splitter=greedy: The 'splitter' param"):
        make_learner("rf", 4, {"splitter": "greedy"})
    with pytest.raises(ValueError, match="The 'splitter' parameter of RFLearner must be"):
        make_learner("rf", 4).set_params(splitter="greedy").fit(X, y)  # fit checks them too


# every --param value is checked by the learner's scikit-learn constraints; xgboost's are its own
XGB_PROBES = {
    "max_depth": [-1, 0, 3], "learning_rate": [-0.1, 0.0, 0.3, 1.5], "subsample": [0.5, 1.0, 1.1],
    "colsample_bytree": [0.5, 1.0, 1.1], "min_child_weight": [-1.0, 0.0, 2.0],
    "reg_lambda": [-1.0, 0.0, 1.0], "max_bin": [0, 1, 2, 32], "n_estimators": [1, 3],
}  # fmt: skip


@pytest.mark.parametrize("key", sorted(XGB_PROBES))
def test_xgboost_constraints_match_xgboost(key):
    """What our constraints accept, xgboost trains with; what xgboost refuses, we refuse."""
    import warnings

    from xgboost import XGBClassifier

    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(30, 3)), np.arange(30) % 3
    for value in XGB_PROBES[key]:
        try:
            make_learner("xgboost", 3, {key: value})
            ours = True
        except StackkitError:
            ours = False
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error")
                XGBClassifier(**{"n_estimators": 1, key: value}).fit(X, y)
            theirs = True
        except Exception:  # xgboost's own parameter check (XGBoostError or ValueError)
            theirs = False
        assert theirs or not ours, f"{key}={value}: accepted here, refused by xgboost"


def test_check_params_before_work(caplog):
    from stackkit.meta.registry import check_params

    check_params({"rf": {"n_estimators": 7}}, ["lr"])  # a good value, but rf is not fitted
    assert "rf is not among the learners fitted (lr): ignored" in caplog.text

    check_params({"knn": {"n_neighbors": 50}}, ["knn"], n_train=50)
    with pytest.raises(StackkitError, match=r"knn.n_neighbors=51: .* 50 rows"):
        check_params({"knn": {"n_neighbors": 51}}, ["knn"], n_train=50)
    with pytest.raises(StackkitError, match=r"--param rf.n_estimators=0"):
        check_params({"rf": {"n_estimators": 0}}, ["lr"])  # rf is not fitted: still refused


def test_knn_records_the_k_it_used(data):
    X, y, _ = data
    est = _learner("knn", n_neighbors=10_000).fit(X[:40], y[:40])
    assert est.n_neighbors_ == 40 and est.summary_()["n_neighbors_used"] == 40


def test_xgboost_device_auto_follows_cuda(monkeypatch):
    """``device="auto"`` trains on CUDA exactly when a GPU is found; the fitted model predicts on
    the CPU either way, and a device that is not one of ours is refused by the constraints."""
    from stackkit.meta import trees

    monkeypatch.setattr(trees, "cuda_available", lambda: True)
    assert trees.resolve_device("auto") == "cuda"
    monkeypatch.setattr(trees, "cuda_available", lambda: False)
    assert trees.resolve_device("auto") == "cpu" and trees.resolve_device("cuda") == "cuda"
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(60, 6)), np.arange(60) % 3
    est = make_learner("xgboost", 3, {"n_estimators": 3}).fit(X, y)
    assert est.device == "auto" and est.model_.get_params()["device"] == "cpu"
    with pytest.raises(StackkitError, match="device"):
        make_learner("xgboost", 3, {"device": "tpu"})


@pytest.mark.gpu
@pytest.mark.skipif(not cuda_available(), reason="needs CUDA")
def test_xgboost_on_cuda_matches_cpu(data):
    """The same learner trained on the GPU and on the CPU: the same classes on (nearly) every
    row, probabilities within a small tolerance (hist on either device; float sums differ)."""
    X, y, folds = data
    train, test = folds != 0, folds == 0
    cpu = make_learner("xgboost", C, {"device": "cpu"}).fit(X[train], y[train])
    gpu = make_learner("xgboost", C, {"device": "cuda"}).fit(X[train], y[train])
    p_cpu, p_gpu = cpu.predict_proba(X[test]), gpu.predict_proba(X[test])
    assert np.abs(p_cpu - p_gpu).max() < 0.05
    assert (p_cpu.argmax(1) == p_gpu.argmax(1)).mean() > 0.98
