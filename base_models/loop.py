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
    logits = logits.float()
    if cfg["loss"] == "focal":
        logp = F.log_softmax(logits, dim=1).gather(1, y[:, None]).squeeze(1)
        return (-((1 - logp.exp()) ** cfg["focal_gamma"]) * logp).mean()
    return F.cross_entropy(logits, y, label_smoothing=cfg["label_smoothing"])


VIEWS = {  # test-time augmentation views of an NCHW batch
    "identity": lambda x: x,
    "hflip": lambda x: torch.flip(x, dims=[3]),
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


def train_epoch(model, loader, norm, opt, sched, cfg, desc: str) -> float:
    model.train()
    total = torch.zeros((), device=norm.device)
    bar = tqdm(loader, desc=desc, leave=False, disable=None)
    for i, (x, y) in enumerate(bar):
        x, y = norm(x), y.to(norm.device, non_blocking=True)
        with autocast(norm.device):
            loss = loss_fn(model(x), y, cfg)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        total += loss.detach()
        if i % POSTFIX_EVERY == 0:
            bar.set_postfix(loss=f"{loss.item():.3f}")
    return float(total.item()) / max(1, len(loader))


def fit(
    model, train_loader, norm, cfg, writer, fold, select: Scored | None = None,
    monitor: Scored | None = None,
) -> FoldFit:  # fmt: skip
    """Train for ``cfg["epochs"]``; the model ends holding the chosen epoch's weights.

    ``select`` (the inner slice) is required for ``epoch_selection: inner`` and chooses the epoch
    (ties keep the earlier one); ``monitor`` (fold k's own rows) is only logged to ``writer``.
    """
    selection = cfg["epoch_selection"]
    if (selection == "inner") != (select is not None):
        raise ValueError(f"epoch_selection {selection!r} with select={select is not None}")
    opt = make_optimizer(model, cfg)
    sched = make_schedule(opt, cfg, len(train_loader))
    out, best_state = FoldFit(cfg["epochs"] - 1, selection), None
    for epoch in range(cfg["epochs"]):
        lr = opt.param_groups[0]["lr"]
        desc = f"fold {fold} epoch {epoch + 1}/{cfg['epochs']}"
        loss = train_epoch(model, train_loader, norm, opt, sched, cfg, desc)
        row = {"epoch": epoch, "train_loss": loss, "lr": lr}
        writer.add_scalar("train/loss", loss, epoch)
        writer.add_scalar("lr", lr, epoch)
        if select is not None:
            row["inner_macro_f1"] = f1 = select.macro_f1(model, norm, f"fold {fold} inner slice")
            writer.add_scalar("inner/macro_f1", f1, epoch)
            if out.inner_f1 is None or f1 > out.inner_f1:
                out.epoch, out.inner_f1 = epoch, f1
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        if monitor is not None:  # information only: never compared, never returned
            f1_oof = monitor.macro_f1(model, norm, f"fold {fold} OOF curve")
            writer.add_scalar("oof_information_only/macro_f1", f1_oof, epoch)
        out.history.append(row)
        log.debug("fold %d epoch %d: %s", fold, epoch, row)
    if best_state is not None:
        model.load_state_dict(best_state)
    return out
