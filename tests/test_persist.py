"""stackkit.meta.persist: every fitted meta learner written as plain files and read back gives the
same probabilities; nothing written is a pickle, and a planted pickle is refused."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest

from stackkit.contract.errors import StackkitError
from stackkit.meta.persist import ARRAYS_FILE, LEARNER_FILE, load_learner, save_learner
from stackkit.meta.registry import make_learner

C = 6


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(3)
    n, r = 300, 3
    y = rng.integers(0, C, n)
    X = rng.normal(size=(n, r * C))
    X[np.arange(n), y] += 2.0  # run 0 knows something
    X[np.arange(n), C + y] += 1.0
    Xt = rng.normal(size=(80, r * C)).astype(np.float32)
    return X, y, Xt


LEARNERS = [
    ("vote", {}),
    ("caruana", {}),
    ("lr", {}),
    ("knn", {}),
    ("svm", {}),
    ("svm", {"n_components": 20}),  # its Nystroem part
    ("rf", {"n_estimators": 8}),
    ("rf", {"n_estimators": 8, "splitter": "best", "max_samples": 0.5}),
    ("xgboost", {"n_estimators": 5}),
]


@pytest.mark.parametrize(("meta", "params"), LEARNERS, ids=lambda v: str(v))
def test_saved_learner_predicts_the_same(tmp_path, data, meta, params):
    X, y, Xt = data
    est = make_learner(meta, n_classes=C, params=params).fit(X, y)
    save_learner(est, tmp_path / "m")
    back = load_learner(tmp_path / "m")
    assert type(back) is type(est)
    assert back.get_params() == est.get_params()
    np.testing.assert_allclose(back.predict_proba(Xt), est.predict_proba(Xt), rtol=0, atol=1e-12)
    np.testing.assert_allclose(back.run_weights_, est.run_weights_, rtol=0, atol=1e-12)
    # nothing written is a pickle: every array loads with allow_pickle=False, the rest is JSON
    for f in (tmp_path / "m").iterdir():
        assert f.name in (LEARNER_FILE, ARRAYS_FILE) or f.name.startswith("xgboost_"), f.name
        if f.suffix == ".json":
            json.loads(f.read_text())
    with np.load(tmp_path / "m" / ARRAYS_FILE, allow_pickle=False) as z:
        for k in z.files:
            assert not z[k].dtype.hasobject


def test_a_class_without_training_rows_stays_at_zero(tmp_path, data):
    X, y, Xt = data
    keep = y != 2
    est = make_learner("lr", n_classes=C).fit(X[keep], y[keep])
    save_learner(est, tmp_path / "m")
    p = load_learner(tmp_path / "m").predict_proba(Xt)
    assert np.all(p[:, 2] == 0) and np.allclose(p, est.predict_proba(Xt), atol=1e-12)


@pytest.mark.parametrize(("meta", "params"), LEARNERS[:5] + LEARNERS[6:7] + LEARNERS[8:])
def test_learners_fitted_on_label_names_round_trip(tmp_path, data, meta, params):
    X, y, Xt = data
    names = np.array([f"c{c}" for c in range(C)], dtype=object)[y]
    est = make_learner(meta, n_classes=None, params=params).fit(X, names)
    save_learner(est, tmp_path / "m")
    back = load_learner(tmp_path / "m")
    assert list(back.classes_) == list(est.classes_) == [f"c{c}" for c in range(C)]
    np.testing.assert_array_equal(back.predict_proba(Xt), est.predict_proba(Xt))
    np.testing.assert_array_equal(back.predict(Xt), est.predict(Xt))


def test_labels_that_are_not_integers_come_back_as_they_were(tmp_path, data):
    X, y, Xt = data
    est = make_learner("lr", n_classes=C).fit(X, y)
    est.classes_ = np.array([f"class {c}" for c in range(C)], dtype=object)
    est.tags_ = {1: ("a", np.int16(3)), "b": [np.float32(0.5), None]}
    save_learner(est, tmp_path / "m")
    back = load_learner(tmp_path / "m")
    assert back.classes_.dtype == object and list(back.classes_) == list(est.classes_)
    assert back.tags_ == est.tags_ and type(back.tags_[1][1]) is np.int16
    np.testing.assert_array_equal(back.predict_proba(Xt), est.predict_proba(Xt))


def test_a_planted_pickle_is_refused(tmp_path, data):
    X, y, _ = data
    save_learner(make_learner("lr", n_classes=C).fit(X, y), tmp_path / "m")
    path = tmp_path / "m" / ARRAYS_FILE
    path.write_bytes(pickle.dumps({"a0": np.zeros(3)}))
    with pytest.raises(StackkitError, match=r"arrays\.npz: not a numpy archive without pickles"):
        load_learner(tmp_path / "m")
    # an object array inside an otherwise valid archive
    with open(path, "wb") as f:
        np.savez(f, a0=np.array([{"x": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(StackkitError, match="unreadable"):
        load_learner(tmp_path / "m")


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            lambda d: d["learner"].update({"$obj": "os.system"}),
            "class 'os.system' is not one stackkit loads",
        ),
        (lambda d: d.update({"format": "pickle"}), "not a stackkit learner"),
        (
            lambda d: d["learner"]["state"].update({"scaler_": {"$array": "nope"}}),
            "no array 'nope'",
        ),
    ],
)
def test_tampered_state_is_one_line(tmp_path, data, edit, message):
    X, y, _ = data
    save_learner(make_learner("lr", n_classes=C).fit(X, y), tmp_path / "m")
    f = tmp_path / "m" / LEARNER_FILE
    doc = json.loads(f.read_text())
    edit(doc)
    f.write_text(json.dumps(doc))
    with pytest.raises(StackkitError, match=message) as err:
        load_learner(tmp_path / "m")
    assert "\n" not in str(err.value)


def test_missing_files_are_named(tmp_path):
    with pytest.raises(StackkitError, match=r"learner\.json: file not found"):
        load_learner(tmp_path / "nothing")


def test_an_unknown_type_cannot_be_saved(tmp_path, data):
    X, y, _ = data
    est = make_learner("lr", n_classes=C).fit(X, y)
    est.extra_ = object()
    with pytest.raises(
        StackkitError, match=r"learner\.extra_: cannot save an object of type object"
    ):
        save_learner(est, tmp_path / "m")
