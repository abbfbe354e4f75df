"""Factor columns of a manifest (``stackkit folds --factors``): declared in folds.parquet, checked
against every row, multi-task heads over classes that are not the whole product (decode, loss,
a run, predict), and the meta stage's per-factor marginals from the declaration.

The manifest below has 4 classes over 3 factors (3 x 2 x 3 = 18 tuples possible):

    class  label_mask  label_gender  label_age      codes (index into the sorted values)
    a      wear        male          9              (2, 1, 0)
    b      wear        female        30             (2, 0, 2)
    c      none        male          9              (1, 1, 0)
    d      incorrect   female        10             (0, 0, 1)

sorted values: mask incorrect, none, wear; gender female, male; age 9, 10, 30 (as integers).
"""

from __future__ import annotations

import dataclasses
import json
import re

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from imagedata import make_manifest_data, make_mask_data
from typer.testing import CliRunner

from base_models import train
from base_models.config import head_weights_for, resolve_config
from base_models.loop import head_loss
from base_models.model import MultiTask, build, decode, factor_labels
from base_models.predict import predict_run
from stackkit.cli import app
from stackkit.contract import schema
from stackkit.contract.errors import StackkitError
from stackkit.contract.store import Store
from stackkit.data.factors import class_codes
from stackkit.data.layouts import folds_for_data, load_dataset
from stackkit.fit import fit_ensemble
from stackkit.meta.features import RunFeatures, code_marginals
from stackkit.meta.persist import load_learner, save_learner
from stackkit.meta.registry import make_learner, resolve_factors
from stackkit.metrics import softmax

CLASSES = ["a", "b", "c", "d"]
COLUMNS = {
    "label_mask": {"a": "wear", "b": "wear", "c": "none", "d": "incorrect"},
    "label_gender": {"a": "male", "b": "female", "c": "male", "d": "female"},
    "label_age": {"a": "9", "b": "30", "c": "9", "d": "10"},
}
CODES = ((2, 1, 0), (2, 0, 2), (1, 1, 0), (0, 0, 1))
FACTORS = "label_mask,label_gender,label_age"


def _data(tmp_path, n_train=16, n_test=3, columns=COLUMNS):
    return make_manifest_data(tmp_path / "data", n_train=n_train, n_test=n_test,
                              classes=CLASSES, factors=columns)  # fmt: skip


def test_folds_parquet_records_the_declared_factors(tmp_path):
    data = _data(tmp_path)
    folds = folds_for_data(data, artifacts=tmp_path / "art", n_folds=2, seed=0, factors=FACTORS)
    back = Store(tmp_path / "art").read_folds()
    declared = back.meta["data"]["factors"]
    assert declared == folds.meta["data"]["factors"]
    assert declared["columns"] == ["label_mask", "label_gender", "label_age"]
    assert declared["values"] == [["incorrect", "none", "wear"], ["female", "male"],
                                  ["9", "10", "30"]]  # fmt: skip
    assert declared["classes"] == [["wear", "male", "9"], ["wear", "female", "30"],
                                   ["none", "male", "9"], ["incorrect", "female", "10"]]  # fmt: skip
    assert class_codes(declared, 4) == CODES
    # without --factors nothing is added, as before
    folds_for_data(data, artifacts=tmp_path / "plain", n_folds=2, seed=0)
    assert "factors" not in Store(tmp_path / "plain").read_folds().meta["data"]


def _with(column: str, cls: str, value: str) -> dict:
    return {**COLUMNS, column: {**COLUMNS[column], cls: value}}


BAD = [
    ("label_mask,label_colour", None, r"train\.csv: missing factor column\(s\) label_colour"),
    ("label_mask", None, r"--factors 'label_mask': needs two or more distinct"),
    ("label_mask,label_mask", None, r"needs two or more distinct"),
    # class c made (wear, male, 9) = class a's tuple
    (FACTORS, _with("label_mask", "c", "wear"),
     r"train\.csv: classes 'a' and 'c' both have factors \(wear, male, 9\)"),
    (FACTORS, _with("label_gender", "d", ""), r"train\.csv: row 3: factor column label_gender is empty"),
]  # fmt: skip


@pytest.mark.parametrize(("factors", "columns", "message"), BAD)
def test_bad_declarations_are_refused_in_one_line_and_nothing_is_written(
    tmp_path, factors, columns, message
):
    data = _data(tmp_path, columns=columns or COLUMNS)
    with pytest.raises(StackkitError, match=message) as err:
        folds_for_data(data, artifacts=tmp_path / "art", n_folds=2, seed=0, factors=factors)
    assert "\n" not in str(err.value)
    assert not (tmp_path / "art" / "folds.parquet").exists()


def test_a_class_with_two_tuples_names_the_class_both_tuples_and_their_rows(tmp_path):
    data = _data(tmp_path)
    csv = pd.read_csv(data / "train.csv", dtype=str)
    csv.loc[6, "label_age"] = "10"  # row 6 is class c (6 % 4 == 2), whose age is 9
    csv.to_csv(data / "train.csv", index=False)
    with pytest.raises(StackkitError) as err:
        load_dataset(data, factors=FACTORS)
    msg = str(err.value)
    assert re.fullmatch(
        r".*train\.csv: class 'c' has factors \(none, male, 10\) in row 6 but \(none, male, 9\) "
        r"in row 2: each class must be one tuple of label_mask, label_gender, label_age",
        msg,
    ), msg
    # the CLI says it in one line, exit 1, nothing written
    out = CliRunner().invoke(app, ["folds", "--data", str(data), "--artifacts",
                                   str(tmp_path / "art"), "--n-folds", "2", "--factors", FACTORS])  # fmt: skip
    assert out.exit_code == 1 and out.output.count("\n") == 1
    assert out.output.startswith("error: ") and "class 'c' has factors" in out.output
    assert not (tmp_path / "art" / "folds.parquet").exists()


def test_the_mask_layout_takes_no_factor_columns(tmp_path):
    data = make_mask_data(tmp_path / "m", n_people=6, n_test=2)
    with pytest.raises(StackkitError, match="--factors applies to the manifest layout only"):
        folds_for_data(data, artifacts=tmp_path / "art", n_folds=2, factors="gender,age")


def test_the_cli_prints_the_factors(tmp_path):
    data = _data(tmp_path)
    out = CliRunner().invoke(app, ["folds", "--data", str(data), "--artifacts",
                                   str(tmp_path / "art"), "--n-folds", "2", "--factors", FACTORS])  # fmt: skip
    assert out.exit_code == 0, out.output
    assert "factors: label_mask 3 x label_gender 2 x label_age 3 (4 classes)" in out.output


# --------------------------------------------------------------------------------------------
# the heads


def test_decode_over_classes_that_are_not_the_product_is_the_hand_sum():
    torch.manual_seed(0)
    m, g, a = torch.randn(5, 3), torch.randn(5, 2), torch.randn(5, 3)
    codes = torch.tensor(CODES)
    out = decode([m, g, a], codes)
    lm, lg, la = (F.log_softmax(z, 1) for z in (m, g, a))
    want = torch.stack(
        [lm[:, 2] + lg[:, 1] + la[:, 0],  # a: wear, male, 9
         lm[:, 2] + lg[:, 0] + la[:, 2],  # b: wear, female, 30
         lm[:, 1] + lg[:, 1] + la[:, 0],  # c: none, male, 9
         lm[:, 0] + lg[:, 0] + la[:, 1]],  # d: incorrect, female, 10
        dim=1,
    )  # fmt: skip
    torch.testing.assert_close(out, want)
    # not normalised over 4 of the 18 tuples: each class keeps its own joint log-probability
    assert torch.all(out.exp().sum(1) < 1)
    # the mask layout is the full product's special case, bit for bit
    full = torch.tensor([(i, j, k) for i in range(3) for j in range(2) for k in range(3)])
    assert torch.equal(decode([m, g, a], full), decode([m, g, a]))


def test_factor_labels_of_declared_classes_hard_and_soft():
    codes = torch.tensor(CODES)
    mask, gender, age = factor_labels(torch.tensor([0, 1, 2, 3, 3]), (3, 2, 3), codes)
    assert mask.tolist() == [2, 2, 1, 0, 0] and gender.tolist() == [1, 0, 1, 0, 0]
    assert age.tolist() == [0, 2, 0, 1, 1]
    soft = torch.tensor([[0.5, 0.25, 0.25, 0.0]])  # half a, a quarter b, a quarter c
    sm, sg, sa = factor_labels(soft, (3, 2, 3), codes)
    torch.testing.assert_close(sm, torch.tensor([[0.0, 0.25, 0.75]]))
    torch.testing.assert_close(sg, torch.tensor([[0.25, 0.75]]))
    torch.testing.assert_close(sa, torch.tensor([[0.75, 0.0, 0.25]]))
    # under bf16 autocast (the CUDA path) the soft targets stay float32 and exact
    third = torch.full((1, 4), 1 / 3) * torch.tensor([[1.0, 1.0, 1.0, 0.0]])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        m_bf = factor_labels(third, (3, 2, 3), codes)[0]
    assert m_bf.dtype == torch.float32 and torch.equal(m_bf, torch.tensor([[0, 1 / 3, 2 / 3]]))


def test_the_loss_is_the_weighted_sum_over_the_declared_factors(tmp_path):
    data = _data(tmp_path)
    declared = load_dataset(data, factors=FACTORS).info["factors"]
    torch.manual_seed(0)
    net = build("test_resnet", 4, "multitask", declared).eval()
    assert isinstance(net, MultiTask) and net.sizes == (3, 2, 3)
    assert "codes" not in net.state_dict()  # the declaration, not a weight
    x, y = torch.randn(2, 3, 32, 32), torch.tensor([3, 1])  # d and b
    cfg = resolve_config("test_resnet", {}) | {"head": "multitask", "head_weights": [1.0, 0.5, 2.0]}
    m, g, a = net.factors(x)
    want = (
        F.cross_entropy(m, torch.tensor([0, 2]))
        + 0.5 * F.cross_entropy(g, torch.tensor([0, 0]))
        + 2.0 * F.cross_entropy(a, torch.tensor([1, 2]))
    )
    torch.testing.assert_close(head_loss(net, x, y, cfg), want)
    with pytest.raises(StackkitError, match="declares factors of 4 classes, the run has 5"):
        build("test_resnet", 5, "multitask", declared)


def test_head_weights_are_one_per_factor_or_all_equal():
    assert head_weights_for({"head_weights": [1.0, 1.0, 1.0]}, ["x", "y"]) == [1.0, 1.0]
    assert head_weights_for({"head_weights": [1.0, 3.0]}, ["x", "y"]) == [1.0, 3.0]
    with pytest.raises(StackkitError, match=r"head_weights \[1.0, 3.0\] has 2 numbers for the 3"):
        head_weights_for({"head_weights": [1.0, 3.0]}, ["x", "y", "z"])


def test_a_multitask_run_on_a_manifest_records_its_factors_and_predicts_as_it_trained(tmp_path):
    data = _data(tmp_path, n_train=16, n_test=3)
    art = tmp_path / "art"
    folds_for_data(data, artifacts=art, n_folds=2, seed=0, factors=FACTORS)
    cfg = tmp_path / "mt.yaml"
    cfg.write_text("head: multitask\nhead_weights: [1.0, 2.0, 1.0]\nbatch: 8\n")
    result = train(model="test_resnet", data=data, artifacts=art, epochs=1, config=cfg,
                   device="cpu", workers=0, threads=1)  # fmt: skip
    assert result.complete
    info = json.loads((result.run_dir / "run.json").read_text())
    head = info["recipe"]["head"]
    declared = Store(art).read_folds().meta["data"]["factors"]
    assert head["kind"] == "multitask" and head["weights"] == [1.0, 2.0, 1.0]
    assert head["factors"] == {"label_mask": 3, "label_gender": 2, "label_age": 3}
    assert head["class_factors"] == declared
    model_json = json.loads((result.run_dir / "models" / "model.json").read_text())
    assert model_json["head"] == "multitask" and model_json["class_factors"] == declared
    assert model_json["factors"] == head["factors"]
    t = pd.read_parquet(result.run_dir / "test.parquet")
    z = t[schema.logit_columns(4)].to_numpy(np.float64)
    assert np.all(np.isfinite(z)) and np.all(z <= 1e-6)  # joint log-probabilities
    test = load_dataset(data).test
    logits, _ = predict_run(result.run_dir / "models", list(test["path"]), device="cpu")
    for k in (0, 1):
        want = t[t["fold"] == k].set_index("sample_id").loc[list(test["sample_id"])]
        np.testing.assert_allclose(logits[k], want[schema.logit_columns(4)], atol=1e-4)


def test_a_manifest_whose_factors_changed_since_the_folds_is_refused(tmp_path):
    data = _data(tmp_path)
    art = tmp_path / "art"
    folds_for_data(data, artifacts=art, n_folds=2, seed=0, factors=FACTORS)
    csv = pd.read_csv(data / "train.csv", dtype=str)
    csv["label_age"] = csv["label_age"].replace({"30": "31"})  # consistent, but not as declared
    csv.to_csv(data / "train.csv", index=False)
    cfg = tmp_path / "mt.yaml"
    cfg.write_text("head: multitask\n")
    with pytest.raises(StackkitError, match=r"no longer give the classes folds\.parquet declares"):
        train(model="test_resnet", data=data, artifacts=art, config=cfg, device="cpu",
              workers=0, threads=1)  # fmt: skip
    assert not (art / "runs").exists() or not any((art / "runs").iterdir())


# --------------------------------------------------------------------------------------------
# the meta stage


def test_marginals_over_declared_classes_are_the_hand_sums():
    p = np.array([[0.1, 0.2, 0.3, 0.4], [0.7, 0.0, 0.2, 0.1]])
    got = code_marginals(p, np.array(CODES))
    # mask incorrect (d), none (c), wear (a+b); gender female (b+d), male (a+c);
    # age 9 (a+c), 10 (d), 30 (b)
    want = [[0.4, 0.3, 0.3, 0.6, 0.4, 0.4, 0.4, 0.2], [0.1, 0.2, 0.7, 0.1, 0.9, 0.9, 0.1, 0.0]]
    np.testing.assert_allclose(got, want, atol=1e-15)


@pytest.fixture(scope="module")
def runs_xy():
    rng = np.random.default_rng(3)
    n, c = 120, 4
    y = rng.integers(0, c, n)
    X = rng.normal(size=(n, 2 * c))
    X[np.arange(n), y] += 2.0
    return X, y


def test_run_features_with_codes_add_each_runs_marginals(runs_xy):
    X, y = runs_xy
    codes = [list(r) for r in CODES]
    feats = RunFeatures(4, "proba", combine="both", factors=codes).fit(X, y)
    assert feats.factors_ == "codes" and feats.n_marginals_ == 8
    p = [softmax(X[:, :4], axis=1), softmax(X[:, 4:], axis=1)]
    m = [code_marginals(q, np.array(CODES)) for q in p]
    want = np.hstack([*p, *m, (p[0] + p[1]) / 2, (m[0] + m[1]) / 2])
    np.testing.assert_allclose(feats.transform(X), want, atol=1e-12)
    assert feats.summary()["factor_sizes"] == [3, 2, 3]
    for bad, message in (([[0, 1]] * 3, "codes for 3 classes, not n_classes=4"),
                         ([[0, -1]] * 4, "class codes"), ([[0], [1, 2]] * 2, "class codes")):  # fmt: skip
        with pytest.raises(ValueError, match=message):
            RunFeatures(4, factors=bad).fit(X, y)


def test_resolve_factors_gives_a_manifest_its_declared_class_codes():
    declared = {"columns": list(COLUMNS), "values": [["incorrect", "none", "wear"],
                ["female", "male"], ["9", "10", "30"]],
                "classes": [[COLUMNS[col][c] for col in COLUMNS] for c in CLASSES]}  # fmt: skip
    got = resolve_factors({"lr": {"factors": "auto"}, "rf": {"factors": "none"}},
                          ["lr", "rf"], {"layout": "manifest", "factors": declared})  # fmt: skip
    assert got["lr"]["factors"] == [list(r) for r in CODES]
    assert got["rf"] == {"factors": "none"}  # what was given stays
    assert resolve_factors({"lr": {"factors": "auto"}}, ["lr"], None)["lr"]["factors"] == "none"


def test_fit_on_a_manifest_with_factors_uses_them_and_saves_them(tmp_path, small_case, runs_xy):
    # the 18 classes of the synthetic case declared as (c % 5, c // 5): 18 of 5 x 4 tuples
    declared = {"columns": ["f1", "f2"], "values": [[str(v) for v in range(5)],
                [str(v) for v in range(4)]],
                "classes": [[str(c % 5), str(c // 5)] for c in range(18)]}  # fmt: skip
    meta = {**small_case.folds.meta, "data": {"layout": "manifest", "factors": declared}}
    store = Store(tmp_path / "a")
    folds = dataclasses.replace(small_case.folds, meta=meta)
    dataclasses.replace(small_case, folds=folds).write(store)
    params = {"lr": {"factors": "auto", "max_iter": 30}}
    res = fit_ensemble(store, meta="lr", params=params, write=False, use_cache=False)
    assert res.learner.features_.factors_ == "codes"
    np.testing.assert_array_equal(
        res.learner.features_.codes_, [(c % 5, c // 5) for c in range(18)]
    )
    assert res.learner.features_.transform(np.zeros((1, 3 * 18))).shape == (1, 3 * (18 + 9))
    X, y = runs_xy
    est = make_learner("lr", 4, {"factors": [list(r) for r in CODES]}).fit(X, y)
    save_learner(est, tmp_path / "m")
    back = load_learner(tmp_path / "m")
    assert back.get_params() == est.get_params()
    np.testing.assert_allclose(back.predict_proba(X), est.predict_proba(X), rtol=0, atol=1e-12)


def test_pseudo_labels_refit_with_the_factors_the_fit_resolved(tmp_path, small_case, monkeypatch):
    import stackkit.pseudo

    declared = {"columns": ["f1", "f2"], "values": [[str(v) for v in range(5)],
                [str(v) for v in range(4)]],
                "classes": [[str(c % 5), str(c // 5)] for c in range(18)]}  # fmt: skip
    meta = {**small_case.folds.meta, "data": {"layout": "manifest", "factors": declared}}
    store = Store(tmp_path / "a")
    folds = dataclasses.replace(small_case.folds, meta=meta)
    dataclasses.replace(small_case, folds=folds).write(store)
    fit_ensemble(store, meta="lr", params={"lr": {"factors": "auto", "max_iter": 30}},
                 name="ens", use_cache=False)  # fmt: skip
    seen = {}
    real = stackkit.pseudo.fold_test_proba

    def spy(runset, meta_name, params, *args, **kwargs):
        seen.update(params)
        return real(runset, meta_name, params, *args, **kwargs)

    monkeypatch.setattr(stackkit.pseudo, "fold_test_proba", spy)
    stackkit.pseudo.pseudo_label(store, "ens", threshold=0.5)
    assert seen["lr"]["factors"] == [[c % 5, c // 5] for c in range(18)]
