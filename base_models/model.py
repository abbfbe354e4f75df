"""The backbone: a timm model built from scratch or from a local state dict, never a hub.

>>> net = create(name, n_classes=18)                       # random init
>>> info = load_pretrained(net, "weights/resnet18.pth")     # classifier keys dropped
>>> net = build(name, n_classes=18, head="multitask")      # mask 3 x gender 2 x age 3 heads
>>> net = build(name, n_classes=7, head="multitask", factors=folds.meta["data"]["factors"])
"""

from __future__ import annotations

import difflib
import logging
import math
from pathlib import Path

import timm
import torch
import torch.nn.functional as F

from stackkit.contract.errors import StackkitError
from stackkit.data.factors import class_codes, factor_sizes

log = logging.getLogger(__name__)


def check_name(name: str) -> None:
    """Refuse a name timm does not know, suggesting close ones."""
    if timm.is_model(name):
        return
    close = difflib.get_close_matches(name, timm.list_models(), n=3, cutoff=0.6)
    hint = f"; did you mean {', '.join(close)}?" if close else " (see timm.list_models())"
    raise StackkitError(f"--model {name!r}: not a timm model{hint}")


def create(name: str, n_classes: int) -> torch.nn.Module:
    check_name(name)
    return timm.create_model(name, pretrained=False, num_classes=n_classes)


HEADS = ("linear", "multitask")
MASK_FACTORS = {"mask": 3, "gender": 2, "age": 3}  # label = 6 * mask + 3 * gender + age
MASK_SIZES = tuple(MASK_FACTORS.values())


def factor_labels(y: torch.Tensor, sizes=MASK_SIZES, codes=None) -> list[torch.Tensor]:
    """Class indices (B,) -> one index tensor per factor; soft targets (B, C) -> each factor's
    marginal (B, size). Without ``codes`` the classes are the full product (mixed-radix digits,
    first most significant); ``codes`` (C, F) gives each class's value index per factor."""
    if codes is not None:
        if y.ndim == 2:
            # index_add, not a matmul: autocast would make bf16 of a matmul's soft targets
            return [
                y.new_zeros(len(y), s).index_add_(1, codes[:, i], y) for i, s in enumerate(sizes)
            ]
        return [codes[y, i] for i in range(len(sizes))]
    if y.ndim == 2:
        t = y.reshape(len(y), *sizes)
        dims = range(1, len(sizes) + 1)
        return [t.sum(dim=tuple(d for d in dims if d != i)) for i in dims]
    out, rest = [], y
    for i in range(len(sizes) - 1, -1, -1):
        out.append(rest % sizes[i])
        rest = torch.div(rest, sizes[i], rounding_mode="floor")
    return out[::-1]


def decode(parts: list[torch.Tensor], codes: torch.Tensor | None = None) -> torch.Tensor:
    """Per-factor logits -> (B, C) log-probabilities: for each class c the sum over factors of
    log p_i(v_i(c)). Without ``codes`` the C = prod sizes classes of the full product, first
    factor most significant (log p(mask) + log p(gender) + log p(age)); with ``codes`` (C, F)
    the classes that exist, class c's value of factor i being ``codes[c, i]``."""
    if codes is not None:
        lps = [F.log_softmax(z.float(), dim=1) for z in parts]
        return sum(lp[:, codes[:, i]] for i, lp in enumerate(lps))
    out = None
    for z in parts:
        lp = F.log_softmax(z.float(), dim=1)
        out = lp if out is None else (out[:, :, None] + lp[:, None, :]).flatten(1)
    return out


class MultiTask(torch.nn.Module):
    """One timm backbone (``num_classes=0``: pooled features) and one linear head per factor.
    ``forward`` gives the decoded class log-probabilities, so prediction, TTA and the contract
    see an ordinary ``C``-way model; ``factors`` gives the per-factor logits the loss needs.
    ``codes`` (C, F), for classes that are not the full product, is a buffer kept out of the
    state dict (it comes from the run's factor declaration, not from training)."""

    def __init__(self, name: str, sizes=MASK_SIZES, codes=None):
        super().__init__()
        check_name(name)
        self.backbone = timm.create_model(name, pretrained=False, num_classes=0)
        self.sizes = tuple(int(s) for s in sizes)
        width = self.backbone.num_features
        self.heads = torch.nn.ModuleList(torch.nn.Linear(width, s) for s in self.sizes)
        codes = None if codes is None else torch.as_tensor(codes, dtype=torch.long)
        self.register_buffer("codes", codes, persistent=False)

    @property
    def pretrained_cfg(self) -> dict:
        return self.backbone.pretrained_cfg

    def factors(self, x: torch.Tensor) -> list[torch.Tensor]:
        f = self.backbone(x)
        return [h(f) for h in self.heads]

    def factor_targets(self, y: torch.Tensor) -> list[torch.Tensor]:
        """Each factor's labels (or soft marginals) of class labels ``y``."""
        return factor_labels(y, self.sizes, self.codes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return decode(self.factors(x), self.codes)


def build(
    name: str, n_classes: int, head: str = "linear", factors: dict | None = None
) -> torch.nn.Module:
    """The run's network: timm's own ``n_classes``-way classifier, or :class:`MultiTask` over
    the mask layout's factors (which needs the 18 classes they make) or, given ``factors`` (a
    manifest's declaration, :mod:`stackkit.data.factors`), over its factors and classes."""
    if head == "linear":
        return create(name, n_classes)
    if factors is not None:
        codes = class_codes(factors, n_classes, "head: multitask: the factor declaration")
        return MultiTask(name, tuple(factor_sizes(factors).values()), codes)
    sizes = MASK_SIZES
    if n_classes != math.prod(sizes):
        raise StackkitError(
            f"head: multitask needs the mask layout's {math.prod(sizes)} classes "
            f"(mask x gender x age) or a manifest with factor columns (stackkit folds --factors); "
            f"folds.parquet has {n_classes} classes and no factors"
        )
    return MultiTask(name, sizes)


def _classifier_prefixes(model: torch.nn.Module) -> tuple[str, ...]:
    head = (getattr(model, "pretrained_cfg", None) or {}).get("classifier") or ()
    heads = (head,) if isinstance(head, str) else tuple(head)
    return tuple(f"{h}." for h in heads)


def load_pretrained(model: torch.nn.Module, path: str | Path) -> None:
    """Load a local state dict (``.pth``/``.safetensors``), the classifier excepted; strict
    otherwise, with the mismatched keys named. A :class:`MultiTask` loads it into its backbone."""
    if isinstance(model, MultiTask):
        model = model.backbone
    path = Path(path).expanduser()
    if not path.is_file():
        raise StackkitError(f"--pretrained {path}: file not found")
    try:
        state = timm.models.load_state_dict(str(path), weights_only=True)
    except Exception as exc:  # any unreadable file: torch and safetensors raise many kinds
        raise StackkitError(f"--pretrained {path}: not a readable state dict ({exc})") from None
    heads = _classifier_prefixes(model)
    state = {k: v for k, v in state.items() if not k.startswith(heads)}
    own = {k: v for k, v in model.state_dict().items() if not k.startswith(heads)}
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = sorted(
        f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}"
        for k in set(own) & set(state)
        if tuple(state[k].shape) != tuple(own[k].shape)
    )
    if missing or unexpected or shapes:
        parts = [
            f"{len(x)} {what} ({', '.join(x[:3])}{', …' if len(x) > 3 else ''})"
            for what, x in (
                ("missing", missing),
                ("unexpected", unexpected),
                ("of another shape", shapes),
            )
            if x
        ]
        raise StackkitError(
            f"--pretrained {path}: does not fit this model: keys {'; '.join(parts)}"
        )
    model.load_state_dict(state, strict=False)
    log.debug(
        "loaded %s (%d tensors; classifier %s left random)", path, len(state), ", ".join(heads)
    )
