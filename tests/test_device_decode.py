"""base_models.device_decode (``decode: device``) on the CPU: the same pixels as the image cache
within the stated tolerance, timm's eval transform exactly, its train transform's geometry, a
whole run with no cache at all, and predict decoding such a run's images as the run did."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from imagedata import make_mask_data
from PIL import Image

import base_models.runner as runner
from base_models import image_cache, shards, train
from base_models.data import data_config, eval_transform, train_transform
from base_models.device_decode import (
    DeviceDecoder,
    EvalOnDevice,
    RawImages,
    TrainOnDevice,
    collate,
    crop_box,
    scan,
)
from base_models.images import decode
from base_models.predict import fold_decoding
from stackkit.contract import schema
from stackkit.contract.errors import StackkitError
from stackkit.contract.store import Store
from stackkit.data.layouts import folds_for_data
from stackkit.predict import RUN_MODELS, run_predictor

FAST = {"model": "test_resnet", "device": "cpu", "workers": 0, "threads": 1, "epochs": 1}


def _photo(path, w=192, h=256, seed=0):
    """A photo-like JPEG (smooth shapes plus sensor noise), portrait like the mask set."""
    rng = np.random.default_rng(seed)
    base = Image.fromarray(rng.integers(0, 255, (8, 6, 3), dtype=np.uint8)).resize((w, h), 3)
    x = np.asarray(base).astype(int) + rng.integers(-12, 13, (h, w, 3))
    Image.fromarray(x.clip(0, 255).astype(np.uint8)).save(path, quality=90)
    return str(path)


def _decoded(paths, size, interpolation="bicubic") -> np.ndarray:
    """The device path on the CPU: (N, H, W, 3) uint8."""
    n = len(paths)
    ds = RawImages(paths, np.arange(n), np.zeros(n), np.ones(n, bool), size, interpolation)
    raw, _ = collate([ds[i] for i in range(n)])
    return DeviceDecoder(paths, size, interpolation, "cpu")(raw).permute(0, 2, 3, 1).numpy()


# (scale size, the largest and the mean |difference| allowed, in levels of 255) from 192x256
# (w x h) JPEGs. Measured on the CPU (torch 2.14, torchvision 0.29, Pillow 13) over 8 images: at
# most 2, mean under 0.01, from 585x438 down to 129x97; at half the source or below (128x96, 64x48,
# 40x30) PIL's JPEG draft mode decodes at 1/2 or 1/4 scale first: at most 8, mean under 1.
TOLERANCE = [((585, 438), 2, 0.05), ((292, 219), 2, 0.05), ((256, 256), 2, 0.05),
             ((300, 200), 2, 0.05), ((129, 97), 2, 0.05), ((128, 96), 10, 1.2),
             ((64, 48), 10, 1.2)]  # fmt: skip


@pytest.mark.parametrize("size, max_diff, mean_diff", TOLERANCE)
def test_device_decode_matches_the_cache_pixels_within_the_tolerance(tmp_path, size, max_diff,
                                                                     mean_diff):  # fmt: skip
    paths = [_photo(tmp_path / f"{i}.jpg", seed=i) for i in range(3)]
    got = _decoded(paths, size).astype(int)
    want = np.stack([decode(p, size, "bicubic") for p in paths]).astype(int)
    diff = np.abs(got - want)
    assert got.shape == (3, *size, 3)
    assert diff.max() <= max_diff and diff.mean() <= mean_diff, (diff.max(), diff.mean())


def test_non_jpeg_files_are_decoded_by_pil_exactly_as_the_cache(tmp_path):
    png = tmp_path / "a.png"
    Image.open(_photo(tmp_path / "a.jpg")).save(png)
    got = _decoded([str(png)], (100, 80))
    np.testing.assert_array_equal(got[0], decode(str(png), (100, 80), "bicubic"))


def test_a_broken_jpeg_stops_the_run_naming_the_file(tmp_path):
    good = _photo(tmp_path / "good.jpg")
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(Path(good).read_bytes()[:600])  # the header and a few bytes of data
    garbage = tmp_path / "garbage.jpg"
    garbage.write_bytes(b"\xff\xd8\xff not a jpeg at all")
    assert scan([good, str(garbage)], 1).tolist() == [1]  # found before training
    with pytest.raises(StackkitError, match=rf"^{bad}: cannot be decoded .*decode: cache"):
        _decoded([good, str(bad)], (64, 48))


def test_a_broken_non_jpeg_is_named_in_one_line_not_a_worker_traceback(tmp_path):
    """A PNG whose header reads (so the scan lets it through) but whose data is cut: the loader
    worker hands its bytes on and the decoder names the file, or skips it with ``on_bad``."""
    good = _photo(tmp_path / "good.jpg")
    png = tmp_path / "cut.png"
    Image.open(good).save(png)
    png.write_bytes(png.read_bytes()[:300])
    assert scan([good, str(png)], 1).tolist() == []  # the header reads
    with pytest.raises(StackkitError, match=rf"^{png}: cannot be decoded .*decode: cache"):
        _decoded([good, str(png)], (64, 48))
    paths = [good, str(png)]
    ds = RawImages(paths, np.arange(2), np.zeros(2), np.ones(2, bool), (64, 48), "bicubic")
    raw, _ = collate([ds[i] for i in range(2)])
    skipped = []
    out = DeviceDecoder(paths, (64, 48), "bicubic", "cpu", on_bad=lambda p, r: skipped.append(p))(
        raw
    )
    assert skipped == [1] and int(out[1].sum()) == 0 and int(out[0].sum()) > 0


def _cfgs(img_size, interpolation=None):
    net = timm.create_model("test_resnet", pretrained=False, num_classes=3)
    cfg = data_config(net, img_size, None)
    if interpolation:
        cfg["interpolation"] = interpolation
    return cfg


def test_eval_on_device_is_timms_eval_transform_exactly():
    rng = np.random.default_rng(0)
    cfg = _cfgs((32, 24))  # scale size (33, 25) at crop_pct 0.95
    pixels = rng.integers(0, 256, (4, 33, 25, 3), dtype=np.uint8)
    want = torch.stack([eval_transform(cfg)(Image.fromarray(p)) for p in pixels])
    got = EvalOnDevice(cfg)(torch.from_numpy(pixels).permute(0, 3, 1, 2))
    assert got.dtype == want.dtype == torch.uint8
    torch.testing.assert_close(got, want, atol=0, rtol=0)


def test_train_on_device_is_timms_train_transform_where_the_crop_is_whole(tmp_path):
    """Images of aspect 40/64 < 3/4 with scale (1, 1): no sampled box fits, so both take timm's
    fallback (the central 53 x 40 crop) and only the resize (PIL vs torch) differs; hflip 1.0
    flips every image in both."""
    cfg = _cfgs((48, 36), "bicubic")
    aug = {"scale": [1.0, 1.0], "hflip": 1.0, "color_jitter": 0.0}
    pixels = _decoded([_photo(tmp_path / f"{i}.jpg", seed=i) for i in range(3)], (64, 40))
    assert crop_box(64, 40, (1.0, 1.0)) == (5, 0, 53, 40)
    want = torch.stack([train_transform(cfg, aug)(Image.fromarray(p)) for p in pixels])
    torch.manual_seed(0)
    got = TrainOnDevice(cfg, aug)(torch.from_numpy(pixels).permute(0, 3, 1, 2))
    assert got.shape == want.shape == (3, 3, 48, 36) and got.dtype == torch.uint8
    diff = (got.int() - want.int()).abs()
    assert diff.max() <= 2 and diff.float().mean() <= 0.3, (diff.max(), diff.float().mean())


def test_crop_boxes_follow_timms_sampling():
    torch.manual_seed(0)
    h, w, scale = 64, 48, (0.5, 1.0)
    boxes = np.array([crop_box(h, w, scale) for _ in range(2000)])
    top, left, ch, cw = boxes.T
    assert (top >= 0).all() and (left >= 0).all()
    assert (top + ch <= h).all() and (left + cw <= w).all()
    area = ch * cw / (h * w)
    assert area.min() >= 0.45 and area.max() <= 1.0  # rounding of the sides aside
    ratio = cw / ch
    assert ratio.min() >= 0.7 and ratio.max() <= 1.4 and len({tuple(b) for b in boxes}) > 500


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_mask_data(tmp_path_factory.mktemp("img") / "data", n_people=12, n_test=4)


def test_a_whole_run_decoded_on_the_device_needs_no_cache(tmp_path, data):
    art = tmp_path / "art"
    folds_for_data(data, artifacts=art, n_folds=2, seed=0)
    cfg = tmp_path / "device.yaml"
    cfg.write_text("decode: device\n")
    result = train(data=data, artifacts=art, config=cfg, **FAST)
    store = Store(art)
    runs = store.load_runs(["test_resnet"], store.read_folds())  # the contract holds
    info = json.loads((result.run_dir / schema.RUN_FILE).read_text())
    assert result.complete and np.isfinite(runs.oof).all()
    assert info["decode"] == {
        "setting": "device", "mode": "device", "image_cache": None, "scale_size": [33, 25]
    }  # fmt: skip
    assert not image_cache.cache_root(art).exists()  # nothing decoded to disk


def test_eval_batches_of_both_paths_agree(tmp_path, data):
    """The runner's own loaders over every image: the cache's and the device's eval batches
    (the tiny noise images upscale slightly: PNGs equal, JPEGs within 1 level)."""
    art = tmp_path / "art"
    folds_for_data(data, artifacts=art, n_folds=2, seed=0)
    _, job = runner.resolve_job("test_resnet", data, art, device="cpu", workers=0, threads=1)
    positions = np.arange(len(job.table.paths))
    with runner._images(job) as cache:
        a = torch.cat([x for x, _ in runner._loaders(job, cache, 0)(positions, False)])
    size = runner._cache_args(job)[1]
    b = torch.cat(
        [x for x, _ in runner._loaders(job, runner.OnDeviceSource(size), 0)(positions, False)]
    )
    assert a.shape == b.shape == (len(positions), 3, 32, 24)
    assert (a.int() - b.int()).abs().max() <= 1


def test_auto_is_the_cache_on_the_cpu_and_on_cuda_the_device_when_the_cache_does_not_fit(
    tmp_path, data, monkeypatch
):
    import shutil
    from collections import namedtuple

    art = tmp_path / "art"
    folds_for_data(data, artifacts=art, n_folds=2, seed=0)
    _, job = runner.resolve_job("test_resnet", data, art, device="cpu")
    assert job.cfg["decode"] == "auto" and runner.decode_mode(job) == "cache"
    job.device = torch.device("cuda")  # only its type is read: no GPU needed
    assert runner.decode_mode(job) == "cache"  # ~200 KB fit
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(2**30, 2**30, 1000))
    assert runner.decode_mode(job) == "device"
    job.device = torch.device("cpu")
    with (
        pytest.raises(StackkitError, match=r"the image cache needs .* GiB, the disk has"),
        runner._images(job),
    ):
        pass


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_nvjpeg_on_cuda_matches_the_cache_pixels(tmp_path):
    """nvJPEG's IDCT and the CUDA resize against PIL. The bound (4 levels, mean 0.5) is a guess
    until a GPU has run it: the assertion message carries what was measured."""
    paths = [_photo(tmp_path / f"{i}.jpg", seed=i) for i in range(4)]
    size = (292, 219)
    ds = RawImages(paths, np.arange(4), np.zeros(4), np.ones(4, bool), size, "bicubic")
    raw, _ = collate([ds[i] for i in range(4)])
    got = DeviceDecoder(paths, size, "bicubic", "cuda")(raw)
    assert got.device.type == "cuda" and got.dtype == torch.uint8
    got = got.permute(0, 2, 3, 1).cpu().numpy().astype(int)
    diff = np.abs(got - np.stack([decode(p, size, "bicubic") for p in paths]).astype(int))
    assert diff.max() <= 4 and diff.mean() <= 0.5, (diff.max(), diff.mean())


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_a_cuda_run_decoded_on_the_device(tmp_path, data):
    art = tmp_path / "art"
    folds_for_data(data, artifacts=art, n_folds=2, seed=0)
    cfg = tmp_path / "device.yaml"
    cfg.write_text("decode: device\n")
    result = train(
        data=data, artifacts=art, config=cfg, **(FAST | {"device": "cuda", "workers": 2})
    )
    info = json.loads((result.run_dir / schema.RUN_FILE).read_text())
    assert result.complete and info["decode"]["mode"] == "device" and info["device"] == "cuda"
    assert not image_cache.cache_root(art).exists()


@pytest.fixture(scope="module")
def device_run(tmp_path_factory):
    """A ``decode: device`` run on eval JPEGs larger than its scale size (96x72 to 33x25: PIL's
    draft mode shrinks them first, so the cache's pixels differ by several levels)."""
    root = tmp_path_factory.mktemp("devrun")
    data = make_mask_data(root / "data", n_people=6, n_test=4, size=(72, 96))
    art = root / "art"
    folds_for_data(data, artifacts=art, n_folds=2, seed=0)
    cfg = root / "device.yaml"
    cfg.write_text("decode: device\n")
    train(data=data, artifacts=art, config=cfg, **FAST)
    return data, art


def _against_the_run(art, data, device="cpu", paths=None, **options):
    """(|logits of the run's saved fold models, through stackkit's predictor entry point, minus
    the run's own test logits| over every fold and eval image, positions skipped)."""
    store = Store(art)
    runs = store.load_runs(["test_resnet"], store.read_folds())
    paths = paths or [str(data / "eval" / "images" / i) for i in runs.test_ids]  # ids: file names
    _, predictor = run_predictor(store, "test_resnet")
    logits, bad = predictor(store.run_dir("test_resnet") / RUN_MODELS, paths, device=device,
                            **options)  # fmt: skip
    assert logits.shape == runs.test[0].shape
    return np.abs(logits - runs.test[0]), bad


def test_predict_decodes_a_device_decoded_run_as_the_run_did(device_run, tmp_path):
    """On the CPU: decode_jpeg and torch's resize, as the run's folds did. Decoded by PIL as the
    cache (what predict did before, and does for a run.json without ``decode``: runs from
    before the key) the logits differ by 1e-3."""
    data, art = device_run
    diff, bad = _against_the_run(art, data)
    assert diff.max() < 1e-4 and len(bad) == 0, diff.max()
    shutil.copytree(art, tmp_path / "art")
    run_json = tmp_path / "art" / "runs" / "test_resnet" / schema.RUN_FILE
    info = json.loads(run_json.read_text())
    assert info["decode"]["mode"] == "device"
    del info["decode"]
    run_json.write_text(json.dumps(info))
    assert fold_decoding(run_json.parent / RUN_MODELS, 2) == (["cache", "cache"], None)
    assert _against_the_run(tmp_path / "art", data)[0].max() > 1e-4


def test_predict_on_a_device_decoded_run_skips_or_names_undecodable_files(device_run, tmp_path):
    data, art = device_run
    paths = sorted(str(p) for p in (data / "eval" / "images").iterdir())
    garbage, cut = tmp_path / "garbage.jpg", tmp_path / "cut.jpg"
    garbage.write_bytes(b"not an image")  # no JPEG magic: PIL's, in the file reader
    cut.write_bytes(Path(paths[0]).read_bytes()[:300])  # a JPEG decode_jpeg then PIL refuse
    spoilt = [paths[0], str(garbage), paths[1], str(cut)]
    with pytest.raises(StackkitError, match=rf"^{garbage}: cannot be decoded as an image .*skip"):
        _against_the_run(art, data, paths=spoilt)
    store = Store(art)
    _, predictor = run_predictor(store, "test_resnet")
    logits, bad = predictor(store.run_dir("test_resnet") / RUN_MODELS, spoilt, device="cpu",
                            skip_bad_images=True)  # fmt: skip
    assert bad.tolist() == [1, 3] and not logits[:, [1, 3]].any()
    whole, _ = predictor(store.run_dir("test_resnet") / RUN_MODELS, paths[:2], device="cpu")
    np.testing.assert_allclose(logits[:, [0, 2]], whole, atol=1e-5)


def test_fold_decoding_reads_run_json_and_each_folds_record_when_they_differ(tmp_path):
    models = tmp_path / "run" / RUN_MODELS
    models.mkdir(parents=True)
    run_json = tmp_path / "run" / schema.RUN_FILE

    def record(**decode):
        run_json.write_text(json.dumps({"run": "r", "decode": decode}))

    assert fold_decoding(models, 3) == (["cache"] * 3, None)  # no run.json at all
    record(setting="device", mode="device", image_cache=None, scale_size=[33, 25])
    assert fold_decoding(models, 3) == (["device"] * 3, (33, 25))
    record(setting="auto", mode=["cache", "device"], image_cache="k", scale_size=[33, 25])
    with pytest.raises(StackkitError, match=r"differs between folds and fold 0's shard record"):
        fold_decoding(models, 2)
    for k, mode in enumerate(["device", "cache"]):
        _, _, rec = shards.shard_files(tmp_path / "run", k)
        for f in shards.shard_files(tmp_path / "run", k):
            f.parent.mkdir(exist_ok=True)
            f.write_text("")
        rec.write_text(json.dumps({"fold": k, "decode": mode}))
    assert fold_decoding(models, 2) == (["device", "cache"], (33, 25))
    record(setting="gpu", mode="gpu", image_cache=None, scale_size=[33, 25])
    with pytest.raises(StackkitError, match=r"run\.json: decode mode 'gpu' is not one of"):
        fold_decoding(models, 2)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_predict_on_cuda_reproduces_a_cuda_device_decoded_run(tmp_path):
    """nvJPEG in both, bf16 autocast in both; the bound (1e-4, the README's) is a guess until a
    GPU has run it: the assertion message carries what was measured."""
    data = make_mask_data(tmp_path / "data", n_people=6, n_test=4, size=(72, 96))
    art = tmp_path / "art"
    folds_for_data(data, artifacts=art, n_folds=2, seed=0)
    cfg = tmp_path / "device.yaml"
    cfg.write_text("decode: device\n")
    train(data=data, artifacts=art, config=cfg, **(FAST | {"device": "cuda", "workers": 2}))
    diff, _ = _against_the_run(art, data, device="cuda")
    assert diff.max() < 1e-4, diff.max()
