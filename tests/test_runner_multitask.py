"""Multi-task heads (issue 15 item 4) on the CPU with timm's tiny test models: the decode is a
log-probability over the 18 classes equal to the hand sum, the loss is the weighted sum of three
cross-entropies, and a multitask run records its head and predicts again from its saved models."""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from imagedata import make_manifest_data, make_mask_data

from base_models import train
from base_models.config import resolve_config
from base_models.loop import head_loss
from base_models.model import MultiTask, build, decode, factor_labels
from base_models.predict import predict_run
from stackkit.contract import schema
from stackkit.contract.errors import StackkitError
from stackkit.data.layouts import MASK_CLASSES, folds_for_data, load_dataset


def test_decode_is_the_hand_sum_of_the_three_log_softmaxes():
    torch.manual_seed(0)
    m, g, a = torch.randn(4, 3), torch.randn(4, 2), torch.randn(4, 3)
    out = decode([m, g, a])
    assert out.shape == (4, 18)
    np.testing.assert_allclose(out.exp().sum(1).numpy(), 1.0, atol=1e-6)  # a distribution
    lm, lg, la = (F.log_softmax(z, 1) for z in (m, g, a))
    for i in range(3):
        for j in range(2):
            for k in range(3):
                label = 6 * i + 3 * j + k
                name = MASK_CLASSES[label].split("_")  # the layout's own class order
                assert name[0] == ("wear", "incorrect", "none")[i]
                assert name[1] == ("male", "female")[j] and name[2] == ("<30", "30-59", "60+")[k]
                want = lm[:, i] + lg[:, j] + la[:, k]
                np.testing.assert_allclose(out[:, label].numpy(), want.numpy(), atol=1e-6)


def test_factor_labels_hard_and_soft():
    y = torch.arange(18)
    mask, gender, age = factor_labels(y)
    assert torch.equal(6 * mask + 3 * gender + age, y)
    soft = torch.zeros(2, 18)
    soft[0, 17], soft[0, 0] = 0.25, 0.75  # none_female_60+ and wear_male_<30
    soft[1] = 1 / 18
    sm, sg, sa = factor_labels(soft)
    np.testing.assert_allclose(sm[0].numpy(), [0.75, 0, 0.25])
    np.testing.assert_allclose(sg[0].numpy(), [0.75, 0.25])
    np.testing.assert_allclose(sa[0].numpy(), [0.75, 0, 0.25])
    np.testing.assert_allclose(sg[1].numpy(), [0.5, 0.5], atol=1e-6)


def test_loss_is_the_weighted_sum_of_three_cross_entropies():
    torch.manual_seed(0)
    net = MultiTask("test_resnet").eval()
    x = torch.randn(2, 3, 32, 32)
    y = torch.tensor([17, 4])  # (none, female, 60+) and (wear, female, 30-59)
    cfg = resolve_config("test_resnet", {}) | {"head": "multitask", "head_weights": [1.0, 0.5, 2.0]}
    m, g, a = net.factors(x)
    want = (
        F.cross_entropy(m, torch.tensor([2, 0]))
        + 0.5 * F.cross_entropy(g, torch.tensor([1, 1]))
        + 2.0 * F.cross_entropy(a, torch.tensor([2, 1]))
    )
    torch.testing.assert_close(head_loss(net, x, y, cfg), want)
    # equal weights: the 18-way cross-entropy of the decoded log-probabilities
    cfg["head_weights"] = [1.0, 1.0, 1.0]
    torch.testing.assert_close(head_loss(net, x, y, cfg), F.nll_loss(net(x), y))


def test_multitask_needs_the_mask_layouts_classes(tmp_path):
    with pytest.raises(
        StackkitError, match=re.escape("head: multitask needs the mask layout's 18")
    ):
        build("test_resnet", 5, "multitask")
    bad = tmp_path / "bad.yaml"
    for weights in ("[1, -1]", "[]", "2"):
        bad.write_text(f"head_weights: {weights}\n")
        with pytest.raises(
            StackkitError, match=re.escape("head_weights must be a list of numbers")
        ):
            resolve_config("test_resnet", {}, bad)


def test_a_multitask_run_records_its_head_and_predicts_as_it_trained(tmp_path):
    data = make_mask_data(tmp_path / "data", n_people=6, n_test=4)
    folds_for_data(data, artifacts=tmp_path / "art", n_folds=2, seed=0)
    cfg = tmp_path / "mt.yaml"
    cfg.write_text("head: multitask\nhead_weights: [1.0, 1.0, 2.0]\nbatch: 8\n")
    result = train(
        model="test_resnet", data=data, artifacts=tmp_path / "art", epochs=1, config=cfg,
        device="cpu", workers=0, threads=1,
    )  # fmt: skip
    info = json.loads((result.run_dir / "run.json").read_text())
    head = info["recipe"]["head"]
    assert head["kind"] == "multitask" and head["weights"] == [1.0, 1.0, 2.0]
    assert head["factors"] == {"mask": 3, "gender": 2, "age": 3}
    assert info["recipe"]["channels_last"] is False  # on the CPU
    model_json = json.loads((result.run_dir / "models" / "model.json").read_text())
    assert model_json["head"] == "multitask"
    t = pd.read_parquet(result.run_dir / "test.parquet")
    z = t[schema.logit_columns(18)].to_numpy(np.float64)
    # identity + hflip averaged in log space: softmax of the logits is still a distribution
    assert np.all(np.isfinite(z)) and np.all(z <= 1e-6)
    test = load_dataset(data).test
    logits, _ = predict_run(result.run_dir / "models", list(test["path"]), device="cpu")
    for k in (0, 1):
        want = t[t["fold"] == k].set_index("sample_id").loc[list(test["sample_id"])]
        np.testing.assert_allclose(logits[k], want[schema.logit_columns(18)], atol=1e-4)


def test_multitask_on_a_manifest_is_refused_before_anything_is_written(tmp_path):
    data = make_manifest_data(
        tmp_path / "data", n_train=36, n_test=2, classes=[f"c{i}" for i in range(18)]
    )
    folds_for_data(data, artifacts=tmp_path / "art", n_folds=2, seed=0)
    cfg = tmp_path / "mt.yaml"
    cfg.write_text("head: multitask\n")
    with pytest.raises(StackkitError, match=r"head: multitask: .* is a manifest layout without"):
        train(model="test_resnet", data=data, artifacts=tmp_path / "art", config=cfg,
              device="cpu", workers=0, threads=1)  # fmt: skip
    runs = tmp_path / "art" / "runs"
    assert not runs.exists() or not any(runs.iterdir())


def test_a_cache_that_does_not_fit_on_the_disk_is_refused_with_the_numbers(tmp_path, monkeypatch):
    import shutil
    from collections import namedtuple

    from base_models import image_cache, images

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(10 * 2**30, 0, 2**30))
    paths = [str(tmp_path / f"{i}.png") for i in range(1000)]
    with pytest.raises(StackkitError, match=re.escape("needs 1.37 GiB, the disk has 1.00 GiB")):
        image_cache.build_cache(paths, tmp_path / "cache", (384, 1280), "bicubic", threads=1)
    assert not (tmp_path / "cache").exists()  # nothing written
    assert images.cache_bytes(1000, (384, 1280)) == 1000 * 384 * 1280 * 3 + 128


def test_channels_last_is_chosen_per_family_and_never_on_the_cpu(tmp_path):
    from base_models.data import use_channels_last

    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    assert use_channels_last("efficientnet_b3", cuda) and use_channels_last("resnet18", cuda)
    assert not use_channels_last("nfnet_f0", cuda) and not use_channels_last("dm_nfnet_f0", cuda)
    assert not use_channels_last("efficientnet_b3", cpu)
    assert use_channels_last("nfnet_f0", cuda, True) and not use_channels_last(
        "resnet18", cuda, False
    )
    bad = tmp_path / "bad.yaml"
    bad.write_text("channels_last: sometimes\n")
    with pytest.raises(StackkitError, match="channels_last must be auto, true or false"):
        resolve_config("test_resnet", {}, bad)


def test_the_demos_multitask_run_differs_from_its_18_way_run_by_the_head_only():
    from base_models import demo

    lin = resolve_config("test_convnext", {}, demo.CONFIG)
    mt = resolve_config("test_convnext", {}, demo.CONFIG_MT)
    assert {k for k in lin if lin[k] != mt[k]} == {"head"} and mt["head"] == "multitask"
    one = {"oof": 0.30, "test": 0.25}
    assert demo.multitask_verdict(one, {"oof": 0.32, "test": 0.26}).startswith(
        "multi-task heads helped on this backbone: OOF macro-F1 +0.0200, test macro-F1 +0.0100"
    )
    assert "did not help" in demo.multitask_verdict(one, {"oof": 0.30, "test": 0.2})
    assert "is mixed" in demo.multitask_verdict(one, {"oof": 0.31, "test": 0.2})


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_multitask_run_bf16_and_channels_last_per_family(tmp_path):
    data = make_mask_data(tmp_path / "data", n_people=6, n_test=4)
    folds_for_data(data, artifacts=tmp_path / "art", n_folds=2, seed=0)
    cfg = tmp_path / "mt.yaml"
    cfg.write_text("head: multitask\nbatch: 8\n")
    for model, channels_last in (("test_efficientnet", True), ("test_nfnet", False)):
        result = train(
            model=model, data=data, artifacts=tmp_path / "art", epochs=1, config=cfg,
            device="cuda", workers=2,
        )  # fmt: skip
        info = json.loads((result.run_dir / "run.json").read_text())
        assert info["device"].startswith("cuda") and info["recipe"]["head"]["kind"] == "multitask"
        assert info["recipe"]["channels_last"] is channels_last
        z = pd.read_parquet(result.run_dir / "oof.parquet")[schema.logit_columns(18)]
        assert np.all(np.isfinite(z.to_numpy()))
