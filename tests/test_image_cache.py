"""base_models.image_cache: one decoded cache per (images, size, preprocessing), shared by runs,
built once under its lock, never half-written, and never removed while a run reads it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from imagedata import make_mask_data
from typer.testing import CliRunner

import base_models.runner as runner
from base_models import image_cache, images, train
from base_models.cli import cache_app
from stackkit.contract.errors import StackkitError
from stackkit.data.layouts import folds_for_data

FAST = {"model": "test_resnet", "device": "cpu", "workers": 0, "threads": 1, "epochs": 1}
N_IMAGES = 12 * 7 + 4  # make_mask_data below: 12 people x 7 images, 4 eval images


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_mask_data(tmp_path_factory.mktemp("img") / "data", n_people=12, n_test=4)


@pytest.fixture
def art(tmp_path, data):
    folds_for_data(data, artifacts=tmp_path / "art", n_folds=2, seed=0)
    return tmp_path / "art"


@pytest.fixture
def decodes(monkeypatch):
    """Every image decode of this process, counted."""
    calls = []
    real = images.decode

    def counted(path, size, interpolation="bicubic"):
        calls.append(path)
        return real(path, size, interpolation)

    monkeypatch.setattr(images, "decode", counted)
    return calls


def _root(art):
    return image_cache.cache_root(art)


def _keys(art):
    return sorted(c["key"] for c in image_cache.list_caches(_root(art)))


def test_two_runs_at_one_size_share_one_cache_decoded_once(data, art, decodes):
    first = train(data=data, artifacts=art, run="a", **FAST)
    [key] = _keys(art)
    npy = _root(art) / key / image_cache.PIXELS
    stamp = (npy.stat().st_ino, npy.stat().st_mtime_ns)
    assert len(decodes) == N_IMAGES
    second = train(data=data, artifacts=art, run="b", lr=1e-3, **FAST)  # another config
    assert len(decodes) == N_IMAGES and _keys(art) == [key]  # not decoded again
    assert (npy.stat().st_ino, npy.stat().st_mtime_ns) == stamp
    for result in (first, second):
        info = json.loads((result.run_dir / "run.json").read_text())
        assert info["decode"] == {
            "setting": "auto", "mode": "cache", "image_cache": key, "scale_size": [33, 25]
        }  # fmt: skip
        assert not (result.run_dir / "cache").exists()  # runs hold no pixels
        assert not list(result.run_dir.rglob("*.npy"))
    assert first.complete and second.complete and npy.exists()  # kept after the runs


def test_another_size_or_edited_images_get_their_own_cache(data, art, decodes):
    paths = [str(p) for p in sorted((data / "eval" / "images").glob("*.jpg"))]
    root = _root(art)
    a = image_cache.build_cache(paths, root, (33, 25), "bilinear", threads=1)
    b = image_cache.build_cache(paths, root, (40, 30), "bilinear", threads=1)
    c = image_cache.build_cache(paths, root, (33, 25), "bicubic", threads=1)
    assert len({a.key, b.key, c.key}) == 3 and len(decodes) == 3 * len(paths)
    assert a.array().shape == (4, 33, 25, 3) and b.array().shape == (4, 40, 30, 3)
    assert image_cache.build_cache(paths, root, (33, 25), "bilinear", threads=1).key == a.key
    st = os.stat(paths[0])
    os.utime(paths[0], ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # the file was edited
    try:
        d = image_cache.build_cache(paths, root, (33, 25), "bilinear", threads=1)
    finally:
        os.utime(paths[0], ns=(st.st_atime_ns, st.st_mtime_ns))
    assert d.key not in (a.key, b.key, c.key) and len(decodes) == 4 * len(paths)
    np.testing.assert_array_equal(a.array()[0], images.decode(paths[0], (33, 25), "bilinear"))


def _run_cache_args(art, data):
    """The image paths, scale size and interpolation of the FAST run: what its cache is keyed on."""
    _, job = runner.resolve_job("test_resnet", data, art, device="cpu")
    return runner._cache_args(job)


def _child(art, data, seconds_per_image: float):
    """Another process building the FAST run's cache, each decode slowed; back once it decodes.
    It imports base_models.image_cache only (no torch), so it starts in about a second."""
    paths, size, interp = _run_cache_args(art, data)
    code = textwrap.dedent(f"""
        import json, sys, time
        from base_models import image_cache, images
        real = images.decode
        def slow(*a, **k):
            print("decoding", flush=True)
            time.sleep({seconds_per_image})
            return real(*a, **k)
        images.decode = slow
        paths = json.loads(sys.stdin.readline())
        image_cache.build_cache(paths, image_cache.cache_root({str(art)!r}), {tuple(size)!r},
                                {interp!r}, threads=1)
        print("done", flush=True)
    """)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        env=env,
    )  # fmt: skip
    proc.stdin.write(json.dumps(paths) + "\n")
    proc.stdin.flush()
    assert proc.stdout.readline().strip() == "decoding"
    return proc


def test_a_killed_build_leaves_no_half_cache_and_the_next_run_cleans_up(data, art):
    proc = _child(art, data, seconds_per_image=5)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    root = _root(art)
    left = [p.name for p in root.iterdir()]
    assert image_cache.list_caches(root) == [] and not [n for n in left if not n.startswith(".")]
    assert any(n.endswith(".tmp") for n in left)  # the temporary folder, hidden
    train(data=data, artifacts=art, folds="0", **FAST)
    [key] = _keys(art)
    assert sorted(p.name for p in root.iterdir()) == [key]  # temporaries and lock gone


def test_clean_removes_what_a_killed_build_left_and_never_a_build_under_way(data, art):
    root = _root(art)
    proc = _child(art, data, seconds_per_image=5)
    try:
        [tmp] = [p for p in root.iterdir() if p.name.endswith(".tmp")]
        assert image_cache.remove_caches(root)["bytes_freed"] == 0 and tmp.exists()  # building
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    res = CliRunner().invoke(cache_app, ["clean", "--artifacts", str(art)])
    assert res.exit_code == 0 and "removed 0 cache(s)" in res.output, res.output
    assert not tmp.exists() and not [p for p in root.iterdir() if p.name.endswith(".tmp")]


def test_a_second_runner_waits_for_the_build_then_reuses_it(
    data, art, decodes, monkeypatch, caplog
):
    monkeypatch.setattr(image_cache, "WAIT_S", 0.05)
    proc = _child(art, data, seconds_per_image=0.05)  # ~4 s of decoding
    try:
        with caplog.at_level("INFO", logger="base_models.image_cache"):
            runner.prepare("test_resnet", data, artifacts=art, device="cpu")
    finally:
        out, _ = proc.communicate(timeout=60)
    assert f"being written by process {proc.pid} " in caplog.text and "waiting" in caplog.text
    assert "reusing image cache" in caplog.text
    assert out.rstrip().endswith("done") and proc.returncode == 0
    assert decodes == [] and len(_keys(art)) == 1  # this process decoded nothing


def test_clean_keeps_a_cache_a_run_reads_and_removes_the_rest(data, art):
    paths = [str(p) for p in sorted((data / "eval" / "images").glob("*.jpg"))]
    root = _root(art)
    other = image_cache.build_cache(paths, root, (40, 30), "bilinear", threads=1)
    with image_cache.open_cache(paths, root, (33, 25), "bilinear", False, 1) as held:
        listed = {c["key"]: c for c in image_cache.list_caches(root)}
        assert listed[held.key]["in_use"] and not listed[other.key]["in_use"]
        res = CliRunner().invoke(cache_app, ["clean", "--artifacts", str(art)])
        assert res.exit_code == 0, res.output
        assert f"kept {held.key}: a run is reading it" in res.output
        assert held.array().shape == (4, 33, 25, 3)  # still readable
        assert _keys(art) == [held.key]
    res = CliRunner().invoke(cache_app, ["list", "--artifacts", str(art)])
    assert held.key in res.output and "33x25" in res.output and "1 cache(s)" in res.output
    assert image_cache.remove_caches(root)["removed"] == [held.key] and _keys(art) == []
    with pytest.raises(StackkitError, match=r"no image cache \.\./x "):
        image_cache.remove_caches(root, ["../x"])


def test_a_run_made_before_shared_caches_loses_its_own_cache_folder(data, art):
    legacy = art / "runs" / "test_resnet" / "cache"
    legacy.mkdir(parents=True)
    (legacy / "images_33x25.npy").write_bytes(b"\x93NUMPY an old per-run cache")
    train(data=data, artifacts=art, folds="0", **FAST)
    assert not legacy.exists() and len(_keys(art)) == 1
