"""The backbone: a timm model built from scratch or from a local state dict, never a hub.

>>> net = create(name, n_classes=18)                       # random init
>>> info = load_pretrained(net, "weights/resnet18.pth")     # classifier keys dropped
"""

from __future__ import annotations

import difflib
import logging
from pathlib import Path

import timm
import torch

from stackkit.contract.errors import StackkitError

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


def _classifier_prefixes(model: torch.nn.Module) -> tuple[str, ...]:
    head = (getattr(model, "pretrained_cfg", None) or {}).get("classifier") or ()
    heads = (head,) if isinstance(head, str) else tuple(head)
    return tuple(f"{h}." for h in heads)


def load_pretrained(model: torch.nn.Module, path: str | Path) -> None:
    """Load a local state dict (``.pth``/``.safetensors``), the classifier excepted; strict
    otherwise, with the mismatched keys named."""
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
