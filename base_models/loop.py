"""One fold model: train for the configured epochs, keep the epoch with the best validation
macro-F1 (on the whole validation vector), and predict with test-time augmentation.

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
    best_epoch: int
    best_f1: float
    history: list[dict] = field(default_factory=list)


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


@torch.no_grad()
def predict(model, loader, norm: Normalizer, tta: bool = True, desc: str = "predict") -> np.ndarray:
    """Logits (float32) in loader order; with ``tta``, identity and horizontal flip averaged."""
    model.eval()
    out = []
    for x, _ in tqdm(loader, desc=desc, leave=False, disable=None):
        x = norm(x)
        with autocast(norm.device):
            z = model(x).float()
            if tta:
                z = (z + model(torch.flip(x, dims=[3])).float()) / 2
        out.append(z.cpu())
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


def fit(model, train_loader, val_loader, val_labels, norm, cfg, n_classes, writer, fold) -> FoldFit:
    """Train; return the best epoch, with the model holding that epoch's weights."""
    opt = make_optimizer(model, cfg)
    sched = make_schedule(opt, cfg, len(train_loader))
    best, best_state = FoldFit(-1, -1.0), None
    for epoch in range(cfg["epochs"]):
        lr = opt.param_groups[0]["lr"]
        loss = train_epoch(
            model,
            train_loader,
            norm,
            opt,
            sched,
            cfg,
            f"fold {fold} epoch {epoch + 1}/{cfg['epochs']}",
        )
        pred = predict(model, val_loader, norm, tta=False, desc=f"fold {fold} validate").argmax(1)
        f1 = macro_f1(val_labels, pred, n_classes)
        best.history.append({"epoch": epoch, "train_loss": loss, "val_macro_f1": f1, "lr": lr})
        writer.add_scalar("train/loss", loss, epoch)
        writer.add_scalar("val/macro_f1", f1, epoch)
        writer.add_scalar("lr", lr, epoch)
        log.debug("fold %d epoch %d: loss %.4f, val macro-F1 %.4f", fold, epoch, loss, f1)
        if f1 > best.best_f1:  # ties keep the earlier epoch
            best.best_epoch, best.best_f1 = epoch, f1
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    model.load_state_dict(best_state)
    return best
