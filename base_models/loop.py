"""One fold model: train for the configured epochs, choose which epoch's weights to keep without
ever looking at the fold's own OOF rows, and predict with test-time augmentation.

Epoch selection (``epoch_selection`` in the config):

- ``fixed`` (default): a fixed schedule; the last epoch's weights are kept.
- ``inner``: the epoch with the best macro-F1 on an *inner slice* (whole groups held out of the
  training folds, see :func:`base_models.splits.inner_slice`) is kept.

Fold k's own rows may be passed as ``monitor``: their per-epoch macro-F1 goes to TensorBoard for
information and into nothing else, so no OOF row decides anything about its own fold's model.

bf16 autocast on CUDA, fp32 on the CPU; the same code either way.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from timm.data import Mixup
from timm.loss import SoftTargetCrossEntropy
from timm.utils import ModelEmaV3
from tqdm.auto import tqdm

from base_models.data import Normalizer
from stackkit.metrics import macro_f1

log = logging.getLogger(__name__)

POSTFIX_EVERY = 20  # batches between progress-bar updates (each one syncs the device)


@dataclass
class FoldFit:
    epoch: int  # the epoch whose weights the model holds (0-based)
    selection: str  # "fixed" or "inner"
    inner_f1: float | None = None  # macro-F1 of that epoch on the inner slice ("inner" only)
    history: list[dict] = field(default_factory=list)


@dataclass
class Scored:
    """Rows predicted once per epoch and scored by macro-F1 (untouched by augmentation)."""

    loader: object
    labels: np.ndarray
    n_classes: int

    def macro_f1(self, model, norm, desc: str) -> float:
        pred = predict(model, self.loader, norm, desc=desc).argmax(1)
        return macro_f1(self.labels, pred, self.n_classes)


def autocast(device: torch.device):
    return torch.autocast(
        device_type=device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"
    )


def make_optimizer(model: torch.nn.Module, cfg: dict) -> torch.optim.Optimizer:
    if cfg["optimizer"] == "sgd":
        return torch.optim.SGD(
            model.parameters(), lr=cfg["lr"], momentum=cfg["momentum"],
            weight_decay=cfg["weight_decay"], nesterov=True,
        )  # fmt: skip
    return torch.optim.AdamW(model.parameters(), lr=cfg["lr"], weight_decay=cfg["weight_decay"])


def make_schedule(opt, cfg: dict, steps_per_epoch: int):
    """Linear warmup over ``warmup_epochs``, then cosine decay to 0, stepped per batch."""
    total = max(1, cfg["epochs"] * steps_per_epoch)
    warm = min(total - 1, round(cfg["warmup_epochs"] * steps_per_epoch))

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / (warm + 1)
        return 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, total - warm)))

    return torch.optim.lr_scheduler.LambdaLR(opt, factor)


def loss_fn(logits: torch.Tensor, y: torch.Tensor, cfg: dict) -> torch.Tensor:
    """Class indices ``y`` (B,), or soft targets (B, C) from Mixup/CutMix, whose label smoothing
    is already in them: cross-entropy is then timm's ``SoftTargetCrossEntropy``, focal loss
    ``-sum_c t_c (1 - p_c)^gamma log p_c`` (the same as the hard case for one-hot targets)."""
    logits = logits.float()
    if y.ndim == 2:
        if cfg["loss"] == "focal":
            logp = F.log_softmax(logits, dim=1)
            return (-(y * (1 - logp.exp()) ** cfg["focal_gamma"] * logp).sum(1)).mean()
        return SoftTargetCrossEntropy()(logits, y)
    if cfg["loss"] == "focal":
        logp = F.log_softmax(logits, dim=1).gather(1, y[:, None]).squeeze(1)
        return (-((1 - logp.exp()) ** cfg["focal_gamma"]) * logp).mean()
    return F.cross_entropy(logits, y, label_smoothing=cfg["label_smoothing"])


def head_loss(model, x: torch.Tensor, y: torch.Tensor, cfg: dict) -> torch.Tensor:
    """The training loss of ``model`` on batch ``x``: :func:`loss_fn` on its logits, or for a
    multi-task model (``head: multitask``) the ``head_weights``-weighted sum of :func:`loss_fn`
    on each factor's logits against that factor's labels (soft targets: their marginals)."""
    if cfg.get("head", "linear") != "multitask":
        return loss_fn(model(x), y, cfg)
    parts = model.factors(x)
    targets = model.factor_targets(y)
    return sum(w * loss_fn(z, t, cfg) for w, z, t in zip(cfg["head_weights"], parts, targets))


def _centre_zoom(x: torch.Tensor, frac: float = 0.9) -> torch.Tensor:
    """The central ``frac`` of each side, resized back to the input size (bilinear)."""
    h, w = x.shape[-2:]
    ch, cw = max(1, round(h * frac)), max(1, round(w * frac))
    top, left = (h - ch) // 2, (w - cw) // 2
    crop = x[..., top : top + ch, left : left + cw]
    return F.interpolate(crop, size=(h, w), mode="bilinear", align_corners=False)


VIEWS = {  # test-time augmentation views of an NCHW batch (names: config.TTA_CHOICES)
    "identity": lambda x: x,
    "hflip": lambda x: torch.flip(x, dims=[3]),
    "zoom90": _centre_zoom,
    "zoom90_hflip": lambda x: _centre_zoom(torch.flip(x, dims=[3])),
}


def tta_logits(model, x: torch.Tensor, views=("identity",)) -> torch.Tensor:
    """Mean of the model's float logits over ``views`` of the normalised batch ``x``."""
    z = None
    for view in views:
        zv = model(VIEWS[view](x)).float()
        z = zv if z is None else z + zv
    return z / len(views)


@torch.no_grad()
def predict(
    model, loader, norm: Normalizer, views=("identity",), desc: str = "predict"
) -> np.ndarray:
    """Logits (float32) in loader order, averaged over the TTA ``views`` in logit space."""
    model.eval()
    out = []
    for x, _ in tqdm(loader, desc=desc, leave=False, disable=None):
        x = norm(x)
        with autocast(norm.device):
            out.append(tta_logits(model, x, views).cpu())
    return torch.cat(out).numpy().astype(np.float32)


def make_mixer(cfg: dict, n_classes: int):
    """timm's Mixup/CutMix for the config, or None when both alphas are 0 (the default)."""
    if cfg["mixup_alpha"] <= 0 and cfg["cutmix_alpha"] <= 0:
        return None
    smoothing = cfg["label_smoothing"] if cfg["loss"] == "ce" else 0.0
    return Mixup(
        mixup_alpha=cfg["mixup_alpha"], cutmix_alpha=cfg["cutmix_alpha"], prob=cfg["mix_prob"],
        label_smoothing=smoothing, num_classes=n_classes,
    )  # fmt: skip


def train_epoch(model, loader, norm, opt, sched, cfg, desc: str, mixer=None, ema=None) -> float:
    """One pass over ``loader``; ``mixer`` mixes each even-sized batch (timm's Mixup draws from
    numpy's seeded generator), ``ema`` is updated after every optimiser step."""
    model.train()
    total = torch.zeros((), device=norm.device)
    bar = tqdm(loader, desc=desc, leave=False, disable=None)
    for i, (x, y) in enumerate(bar):
        x, y = norm(x), y.to(norm.device, non_blocking=True)
        if mixer is not None and len(x) % 2 == 0:
            x, y = mixer(x, y)
        with autocast(norm.device):
            loss = head_loss(model, x, y, cfg)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if ema is not None:
            ema.update(model)
        total += loss.detach()
        if i % POSTFIX_EVERY == 0:
            bar.set_postfix(loss=f"{loss.item():.3f}")
    return float(total.item()) / max(1, len(loader))


def fit(
    model, train_loader, norm, cfg, writer, fold, select: Scored | None = None,
    monitor: Scored | None = None, n_classes: int | None = None,
) -> FoldFit:  # fmt: skip
    """Train for ``cfg["epochs"]``; the model ends holding the chosen epoch's weights (the EMA
    weights when ``ema_decay`` > 0, which then also are what ``select`` scores).

    ``select`` (the inner slice) is required for ``epoch_selection: inner`` and chooses the epoch
    (ties keep the earlier one); ``monitor`` (fold k's own rows) is only logged to ``writer``.
    ``n_classes`` is needed for Mixup/CutMix targets.
    """
    selection = cfg["epoch_selection"]
    if (selection == "inner") != (select is not None):
        raise ValueError(f"epoch_selection {selection!r} with select={select is not None}")
    opt = make_optimizer(model, cfg)
    sched = make_schedule(opt, cfg, len(train_loader))
    mixer = make_mixer(cfg, n_classes)
    ema = ModelEmaV3(model, decay=cfg["ema_decay"]) if cfg["ema_decay"] > 0 else None
    scored = model if ema is None else ema.module  # the weights that predict: EMA's when on
    out, best_state = FoldFit(cfg["epochs"] - 1, selection), None
    for epoch in range(cfg["epochs"]):
        lr = opt.param_groups[0]["lr"]
        desc = f"fold {fold} epoch {epoch + 1}/{cfg['epochs']}"
        mixing = mixer if not cfg["mix_off_epoch"] or epoch < cfg["mix_off_epoch"] else None
        loss = train_epoch(model, train_loader, norm, opt, sched, cfg, desc, mixing, ema)
        row = {"epoch": epoch, "train_loss": loss, "lr": lr, "mixed": mixing is not None}
        writer.add_scalar("train/loss", loss, epoch)
        writer.add_scalar("lr", lr, epoch)
        if select is not None:
            row["inner_macro_f1"] = f1 = select.macro_f1(scored, norm, f"fold {fold} inner slice")
            writer.add_scalar("inner/macro_f1", f1, epoch)
            if out.inner_f1 is None or f1 > out.inner_f1:
                out.epoch, out.inner_f1 = epoch, f1
                best_state = {k: v.detach().clone() for k, v in scored.state_dict().items()}
        if monitor is not None:  # information only: never compared, never returned
            f1_oof = monitor.macro_f1(scored, norm, f"fold {fold} OOF curve")
            writer.add_scalar("oof_information_only/macro_f1", f1_oof, epoch)
        out.history.append(row)
        log.debug("fold %d epoch %d: %s", fold, epoch, row)
    if best_state is None and ema is not None:
        best_state = ema.module.state_dict()
    if best_state is not None:
        model.load_state_dict(best_state)
    return out
