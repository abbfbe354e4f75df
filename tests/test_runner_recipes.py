"""Training recipes (issue 15 items 1-3) built from timm's own pieces, on the CPU with timm's tiny
test models: Mixup/CutMix targets and their loss, EMA weights as the ones that predict, TTA views
as a config list, each recorded in run.json."""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from imagedata import make_mask_data
from timm.data import Mixup
from timm.loss import SoftTargetCrossEntropy

from base_models import train
from base_models.config import TTA_CHOICES, resolve_config
from base_models.loop import VIEWS, fit, loss_fn, make_mixer, tta_logits
from base_models.predict import predict_run
from stackkit.contract import schema
from stackkit.contract.errors import StackkitError
from stackkit.data.layouts import folds_for_data, load_dataset

FAST = {"model": "test_resnet", "device": "cpu", "workers": 0, "threads": 1}


def _cfg(**over):
    return resolve_config("test_resnet", {}) | over


def test_mixed_targets_and_loss_are_timms():
    torch.manual_seed(0)
    np.random.seed(0)
    x, y = torch.randn(6, 3, 8, 8), torch.tensor([0, 1, 2, 3, 4, 0])
    cfg = _cfg(mixup_alpha=0.4, label_smoothing=0.1)
    mixer = make_mixer(cfg, n_classes=5)
    assert isinstance(mixer, Mixup) and make_mixer(_cfg(), 5) is None  # off by default
    xm, t = mixer(x.clone(), y)
    # the mixing weight, read back from the pixels: xm = lam x + (1 - lam) x.flip(0)
    d = x - x.flip(0)
    lam = float(((xm - x.flip(0))[d.abs() > 1e-3] / d[d.abs() > 1e-3]).mean())
    smooth = F.one_hot(y, 5).float() * 0.9 + 0.1 / 5
    np.testing.assert_allclose(t, lam * smooth + (1 - lam) * smooth.flip(0), atol=1e-5)
    logits = torch.randn(6, 5)
    want = SoftTargetCrossEntropy()(logits, t)
    assert torch.allclose(loss_fn(logits, t, cfg), want)
    assert torch.allclose(want, -(t * F.log_softmax(logits, 1)).sum(1).mean())
    # soft focal loss: plain soft cross-entropy at gamma 0, the hard focal loss on one-hot targets
    focal = _cfg(loss="focal", focal_gamma=0.0)
    assert torch.allclose(loss_fn(logits, t, focal), want)
    focal["focal_gamma"] = 2.0
    hot = F.one_hot(y, 5).float()
    assert torch.allclose(loss_fn(logits, hot, focal), loss_fn(logits, y, focal))


class _Writer:
    def add_scalar(self, *a):
        pass


def _tiny_fit(ema_decay: float):
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 3))
    start = {k: v.clone() for k, v in net.state_dict().items()}
    x, y = torch.randn(32, 3, 2, 2), torch.randint(0, 3, (32,))
    loader = [(x[i : i + 8], y[i : i + 8]) for i in range(0, 32, 8)]

    class Norm:
        device = torch.device("cpu")

        def __call__(self, b):
            return b.float()

    cfg = _cfg(epochs=3, lr=0.1, warmup_epochs=0.0, ema_decay=ema_decay)
    fit(net, loader, Norm(), cfg, _Writer(), 0, n_classes=3)
    return start, net.state_dict()


def test_with_ema_the_model_ends_holding_the_ema_weights():
    start, plain = _tiny_fit(0.0)
    moved = max((plain[k] - start[k]).abs().max() for k in start)
    assert moved > 0.05  # 12 steps at lr 0.1 move the weights
    start, ema = _tiny_fit(0.999999)  # an average that barely leaves its start
    assert max((ema[k] - start[k]).abs().max() for k in start) < moved * 1e-3


def test_tta_views_average_in_logit_space():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Flatten(), torch.nn.LazyLinear(5))
    x = torch.randn(2, 3, 10, 8)
    net(x)
    assert set(VIEWS) == set(TTA_CHOICES)
    for v in VIEWS:
        assert VIEWS[v](x).shape == x.shape
    want = (net(x) + net(torch.flip(x, dims=[3]))) / 2
    assert torch.allclose(tta_logits(net, x, ("identity", "hflip")), want)
    assert not torch.allclose(VIEWS["zoom90"](x), x)


@pytest.mark.parametrize(
    "layer, message",
    [
        ("mixup_alpha: -1\n", "mixup_alpha must be a number in [0, 100]"),
        ("mix_prob: 1.5\n", "mix_prob must be a number in [0, 1]"),
        ("ema_decay: 1.0\n", "ema_decay must be a number in [0, 1)"),
        ("mix_off_epoch: 1.5\n", "mix_off_epoch must be an integer >= 0"),
        ("tta: [identity, vflip]\n", "tta must be a list of views among identity, hflip"),
        ("tta: []\n", "tta must be a list of views"),
    ],
)
def test_bad_recipe_values_are_one_line(tmp_path, layer, message):
    path = tmp_path / "bad.yaml"
    path.write_text(layer)
    with pytest.raises(StackkitError, match=re.escape(message)):
        resolve_config("test_resnet", {}, path)


def test_a_run_with_every_recipe_records_them_and_predicts_as_it_trained(tmp_path):
    data = make_mask_data(tmp_path / "data", n_people=6, n_test=4)
    folds_for_data(data, artifacts=tmp_path / "art", n_folds=2, seed=0)
    cfg = tmp_path / "recipe.yaml"
    cfg.write_text(
        "mixup_alpha: 0.2\ncutmix_alpha: 1.0\nmix_off_epoch: 1\nema_decay: 0.9\n"
        "tta: [identity, zoom90]\nbatch: 8\n"
    )
    result = train(data=data, artifacts=tmp_path / "art", epochs=2, config=cfg, **FAST)
    info = json.loads((result.run_dir / "run.json").read_text())
    assert info["tta"] == ["identity", "zoom90"]
    recipe = info["recipe"]
    assert recipe["mix"] == {
        "mixup_alpha": 0.2, "cutmix_alpha": 1.0, "mix_prob": 1.0, "mix_off_epoch": 1,
    }  # fmt: skip
    assert recipe["ema"]["decay"] == 0.9 and recipe["tta"] == ["identity", "zoom90"]
    shard = json.loads((result.run_dir / "shards" / "fold_0.json").read_text())
    assert [h["mixed"] for h in shard["history"]] == [True, False]  # off from epoch 1
    # the saved fold models (EMA weights, zoom90 TTA) give the run's test logits again
    test = load_dataset(data).test
    logits, _ = predict_run(result.run_dir / "models", list(test["path"]), device="cpu")
    t = pd.read_parquet(result.run_dir / "test.parquet")
    for k in (0, 1):
        want = t[t["fold"] == k].set_index("sample_id").loc[list(test["sample_id"])]
        np.testing.assert_allclose(logits[k], want[schema.logit_columns(18)], atol=1e-4)
    plain = json.loads((result.run_dir / "models" / "model.json").read_text())
    assert plain["tta"] == ["identity", "zoom90"]
