"""Is the data pipeline fast enough? Training and inference images/s through the real pipeline
beside the same model on a batch already in device memory. Target: pipeline >= 90% of synthetic.

    .venv/bin/python bench/train_throughput.py resnet18 512x384
    .venv/bin/python bench/train_throughput.py tf_efficientnet_lite0 320x240 --batch 96 --workers 12
    .venv/bin/python bench/train_throughput.py nfnet_f0 384x288 --decode device

``--decode cache`` (default): cached uint8 pixels -> timm transforms in loader workers ->
normalise on the device; the images are decoded once into the cache first (its rate is printed
too). ``--decode device``: loader workers read the JPEG bytes, the device decodes, resizes and
augments each batch (base_models.device_decode). Images are generated portraits (384x512 JPEG,
like the mask set). The training and inference loops are base_models' own.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from base_models.config import default_workers, parse_img_size, resolve_config
from base_models.data import (
    CachedImages,
    Normalizer,
    data_config,
    eval_transform,
    make_loader,
    train_transform,
)
from base_models.device_decode import (
    DeviceDecoder,
    EvalOnDevice,
    RawImages,
    TrainOnDevice,
    collate,
)
from base_models.device_decode import OnDevice as Decoded
from base_models.image_cache import build_cache
from base_models.images import scale_size
from base_models.loop import make_optimizer, make_schedule, predict, train_epoch
from base_models.model import create

TTA = ("identity", "hflip")  # the runner's default views


class OnDevice:
    """Stands in for the Normalizer when the batch is already normalised in device memory."""

    def __init__(self, device: torch.device):
        self.device = device

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return x


def make_images(folder: Path, n: int) -> list[str]:
    rng = np.random.default_rng(0)
    base = rng.integers(0, 255, size=(512, 384, 3), dtype=np.uint8)
    paths = []
    for i in range(n):
        img = np.roll(base, i * 7, axis=0)  # distinct files, photo-like JPEG size
        p = folder / f"{i:05d}.jpg"
        Image.fromarray(img).save(p, quality=90)
        paths.append(str(p))
    return paths


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device, n_images: int) -> float:
    fn()  # warm-up: cudnn autotune, worker start-up, allocator
    sync(device)
    t0 = time.perf_counter()
    fn()
    sync(device)
    return n_images / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("img_size", help="HxW, e.g. 512x384")
    ap.add_argument("--n-images", type=int, default=512)
    ap.add_argument("--batch", type=int, default=None)
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--threads", type=int, default=None, help="CPU threads for the model")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--decode", choices=("cache", "device"), default="cache")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.backends.cudnn.benchmark = True
    cfg = resolve_config(
        args.model, {"img_size": parse_img_size(args.img_size), "batch": args.batch, "epochs": 1}
    )
    workers = default_workers(device.type) if args.workers is None else args.workers
    net = create(args.model, 18).to(
        device, memory_format=Normalizer({"mean": [0] * 3, "std": [1] * 3}, device).memory_format
    )
    dcfg = data_config(net, cfg["img_size"], cfg["crop_pct"])
    n, b = args.n_images - args.n_images % cfg["batch"], cfg["batch"]

    with tempfile.TemporaryDirectory() as tmp:
        paths = make_images(Path(tmp), n)
        size = scale_size(cfg["img_size"], dcfg["crop_pct"])
        labels = np.arange(n) % 18
        norm = Normalizer(dcfg, device)
        if args.decode == "cache":
            t0 = time.perf_counter()
            cache = build_cache(paths, Path(tmp) / "cache", size, dcfg["interpolation"],
                                threads=max(1, workers))  # fmt: skip
            decode_rate = f"cache decode {n / (time.perf_counter() - t0):.0f} img/s"
            ds_train = CachedImages(cache.path, np.arange(n), labels, train_transform(dcfg, cfg))
            ds_eval = CachedImages(cache.path, np.arange(n), labels, eval_transform(dcfg))
            train_dl = make_loader(ds_train, b, train=True, workers=workers, device=device, seed=0)
            eval_dl = make_loader(ds_eval, 2 * b, train=False, workers=workers, device=device,
                                  seed=0)  # fmt: skip
        else:
            decode_rate = "decoded on the device, no cache"
            raw = RawImages(paths, np.arange(n), labels, np.ones(n, bool), size,
                            dcfg["interpolation"])  # fmt: skip
            dec = DeviceDecoder(paths, size, dcfg["interpolation"], device)
            opts = dict(workers=workers, device=device, seed=0, collate=collate)
            train_dl = Decoded(make_loader(raw, b, train=True, **opts), dec,
                               TrainOnDevice(dcfg, cfg))  # fmt: skip
            eval_dl = Decoded(make_loader(raw, 2 * b, train=False, **opts), dec,
                              EvalOnDevice(dcfg))  # fmt: skip

        x = norm(next(iter(train_dl))[0])
        y = torch.as_tensor(labels[:b])
        fake_train = [(x, y)] * (n // b)
        fake_eval = [(torch.cat([x, x]), y)] * (n // (2 * b))
        opt = make_optimizer(net, cfg)
        sched = make_schedule(opt, cfg | {"epochs": 1000}, n // b)
        dev = OnDevice(device)
        rates = {
            "train pipeline": timed(
                lambda: train_epoch(net, train_dl, norm, opt, sched, cfg, "train"), device, n
            ),
            "train synthetic": timed(
                lambda: train_epoch(net, fake_train, dev, opt, sched, cfg, "train"), device, n
            ),
            "infer pipeline": timed(lambda: predict(net, eval_dl, norm, TTA), device, n),
            "loader only": timed(lambda: [norm(xb) for xb, _ in train_dl], device, n),
            "infer synthetic": timed(
                lambda: predict(net, fake_eval, dev, TTA), device, len(fake_eval) * 2 * b
            ),
        }
    print(f"{args.model} {cfg['img_size'][0]}x{cfg['img_size'][1]} on {device} ({torch.get_num_threads()} threads), batch {b}, {workers} workers, "
          f"{n} images ({decode_rate})")  # fmt: skip
    for phase in ("train", "infer"):
        p, s = rates[f"{phase} pipeline"], rates[f"{phase} synthetic"]
        print(
            f"  {phase:5s}  pipeline {p:8.1f} img/s   synthetic {s:8.1f} img/s   ratio {p / s:6.1%}"
        )
    print(
        f"  loader alone (train transforms + normalise, no model): {rates['loader only']:.1f} img/s"
    )


if __name__ == "__main__":
    main()
