"""What keeping models for new data costs: `stackkit predict`'s images/s against the runner's own
test-time prediction (same images, same fold models), the bytes a fold model takes, and the
bytes and seconds of each saved meta learner (rf's node arrays against skops.io too).

    .venv/bin/python bench/predict.py images --model resnet18 --img-size 128x96 --n 256
    .venv/bin/python bench/predict.py learners            # the reference case, every learner
    PYTHONPATH=/tmp/skops .venv/bin/python bench/predict.py learners --skops   # skops installed apart

``images``: portraits (384x512 JPEG, like the mask set); K randomly initialised fold models saved
by ``base_models.predict.save_fold_model``. The runner's path is what a fold job does for its
test rows: decode into the image cache, then ``loop.predict`` through loader batches; ``predict``
is ``base_models.predict.predict_run`` (decode once per chunk, every fold model per chunk).
Both include decoding. The two logits are compared too.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

import numpy as np


def bench_images(args) -> None:
    import torch
    from PIL import Image

    from base_models.config import parse_img_size
    from base_models.data import CachedImages, Normalizer, data_config, eval_transform, make_loader
    from base_models.image_cache import build_cache
    from base_models.images import scale_size
    from base_models.loop import predict
    from base_models.model import create
    from base_models.predict import fold_file, predict_run, save_fold_model

    torch.set_num_threads(args.threads)
    tmp = Path(tempfile.mkdtemp())
    rng = np.random.default_rng(0)
    paths = []
    for i in range(args.n):
        x = rng.integers(0, 255, size=(512, 384, 3), dtype=np.uint8)
        p = tmp / f"{i:05d}.jpg"
        Image.fromarray(x).save(p, quality=90)
        paths.append(str(p))
    classes = [str(c) for c in range(18)]
    folder = tmp / "models"
    dcfg = None
    for k in range(args.folds):
        torch.manual_seed(k)
        net = create(args.model, len(classes))
        dcfg = data_config(net, img_size=parse_img_size(args.img_size))
        save_fold_model(folder, k, net, model=args.model, dcfg=dcfg, classes=classes,
                        n_folds=args.folds)  # fmt: skip
    dev = torch.device(args.device)

    t0 = time.perf_counter()  # the runner: cache, then every fold model through loader batches
    size = scale_size(dcfg["input_size"][1:], dcfg["crop_pct"])
    cache = build_cache(paths, tmp / "cache", size, dcfg["interpolation"], args.threads)
    norm = Normalizer(dcfg, dev)
    runner = []
    for k in range(args.folds):
        from safetensors.torch import load_file

        net = create(args.model, len(classes))
        net.load_state_dict(load_file(folder / fold_file(k)))
        net = net.to(dev, memory_format=norm.memory_format)
        ds = CachedImages(cache.path, np.arange(len(paths)), np.zeros(len(paths)),
                          eval_transform(dcfg))  # fmt: skip
        dl = make_loader(ds, args.batch, train=False, workers=0, device=dev, seed=0)
        runner.append(predict(net, dl, norm, tta=True, desc=""))
    t_runner = time.perf_counter() - t0

    t0 = time.perf_counter()
    logits, _ = predict_run(folder, paths, device=args.device, batch_size=args.batch)
    t_predict = time.perf_counter() - t0

    diff = float(np.abs(logits - np.stack(runner)).max())
    size_b = (folder / fold_file(0)).stat().st_size
    print(f"{args.model} {args.img_size}, {args.n} images x {args.folds} folds, {args.device}, "
          f"{args.threads} threads, batch {args.batch}")  # fmt: skip
    print(f"runner test-time prediction: {args.n / t_runner:7.1f} images/s ({t_runner:.1f} s)")
    print(f"stackkit predict (models):   {args.n / t_predict:7.1f} images/s ({t_predict:.1f} s)")
    print(f"max |logit difference|: {diff:.2e}; bytes per fold model: {size_b:,}")


def bench_learners(args) -> None:
    from stackkit.data.synthetic import make_case
    from stackkit.meta.persist import load_learner, save_learner
    from stackkit.meta.registry import make_learner
    from stackkit.predict import fold_mean_features

    case = make_case(n_groups=args.groups, n_test=args.test, n_runs=args.runs)
    names = sorted(case.oof)
    X = np.hstack([case.oof[n].filter(like="logit_").to_numpy(np.float64) for n in names])
    y = case.folds.labels
    test = np.stack([
        np.stack([g.filter(like="logit_").to_numpy() for _, g in case.test[n].groupby("fold")])
        for n in names
    ])  # fmt: skip
    Xt = fold_mean_features(test)
    print(f"{len(y)} rows x {X.shape[1]} columns ({len(names)} runs)")
    print(f"{'learner':8} {'bytes':>12} {'save s':>7} {'load s':>7} {'max diff':>9}")
    for m in args.learners.split(","):
        est = make_learner(m, n_classes=18).fit(X, y)
        d = Path(tempfile.mkdtemp()) / m
        t0 = time.perf_counter()
        save_learner(est, d)
        t_save = time.perf_counter() - t0
        t0 = time.perf_counter()
        back = load_learner(d)
        t_load = time.perf_counter() - t0
        diff = np.abs(back.predict_proba(Xt) - est.predict_proba(Xt)).max()
        size_b = sum(f.stat().st_size for f in d.rglob("*") if f.is_file())
        print(f"{m:8} {size_b:12,} {t_save:7.2f} {t_load:7.2f} {diff:9.1e}")
        if m == "rf" and args.skops:
            _skops(est, d.parent)


def _skops(est, tmp: Path) -> None:
    import zipfile

    import skops.io as sio

    f = tmp / "rf.skops"
    t0 = time.perf_counter()
    sio.dump(est.model_, f, compression=zipfile.ZIP_DEFLATED)
    t_save = time.perf_counter() - t0
    untrusted = sio.get_untrusted_types(file=f)
    t0 = time.perf_counter()
    sio.load(f, trusted=untrusted)
    t_load = time.perf_counter() - t0
    print(f"{'rf skops':8} {f.stat().st_size:12,} {t_save:7.2f} {t_load:7.2f}  (the forest "
          f"alone; {len(untrusted)} types to trust: {', '.join(untrusted)})")  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="what", required=True)
    im = sub.add_parser("images")
    im.add_argument("--model", default="resnet18")
    im.add_argument("--img-size", default="128x96")
    im.add_argument("--n", type=int, default=256)
    im.add_argument("--folds", type=int, default=2)
    im.add_argument("--batch", type=int, default=64)
    im.add_argument("--threads", type=int, default=2)
    im.add_argument("--device", default="cpu")
    le = sub.add_parser("learners")
    le.add_argument("--groups", type=int, default=2700)
    le.add_argument("--test", type=int, default=12600)
    le.add_argument("--runs", type=int, default=10)
    le.add_argument("--learners", default="vote,caruana,lr,knn,svm,rf,xgboost")
    le.add_argument("--skops", action="store_true", help="rf through skops.io too")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    (bench_images if args.what == "images" else bench_learners)(args)


if __name__ == "__main__":
    main()
