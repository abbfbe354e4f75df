"""A shared artifacts folder, used adversarially: names that try to escape, symlinks planted,
replacing without --force. Each bad input is a row of a table; each must be refused in one
line, with nothing written, replaced or deleted anywhere."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from stackkit.cli import app
from stackkit.contract.errors import StackkitError
from stackkit.contract.store import Store
from stackkit.fit import fit_ensemble

runner = CliRunner()


@pytest.fixture(scope="module")
def base_folder(tmp_path_factory, small_case):
    """folds, three runs, an ensemble 'ens' (vote) and a pseudo set 'ens': built once."""
    root = tmp_path_factory.mktemp("base") / "artifacts"
    store = Store(root)
    small_case.write(store)
    fit_ensemble(store, meta="vote", name="ens", n_jobs=1, use_cache=False)
    from stackkit.pseudo import pseudo_label

    pseudo_label(store, "ens", threshold=0.2)
    return root


@pytest.fixture
def world(tmp_path, base_folder):
    """tmp_path/artifacts (a copy of the base folder) beside tmp_path/outside (a bystander)."""
    shutil.copytree(base_folder, tmp_path / "artifacts", symlinks=True)
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "keep.txt").write_text("not stackkit's")
    return tmp_path


def snapshot(top: Path) -> dict:
    """Every path under ``top`` with its size and modification time."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(top):
        for n in dirnames + filenames:
            p = Path(dirpath) / n
            st = p.lstat()
            out[str(p.relative_to(top))] = (st.st_size, st.st_mtime_ns)
    return out


def invoke(world: Path, args: list[str]):
    old = Path.cwd()
    os.chdir(world / "artifacts" / "runs")  # relative escapes then land in tmp_path
    try:
        return runner.invoke(app, [*args, "--artifacts", str(world / "artifacts")])
    finally:
        os.chdir(old)


BAD_NAMES = ["../runs", "../x", "..", ".", "", "a\nb", "<b>", "a/b", ".hidden", "-x", "x" * 101]


def bad_name_cases():
    for bad in BAD_NAMES:
        yield pytest.param(["fit", "--meta", "vote", "--name", bad], id=f"fit--name:{bad!r}")
    yield pytest.param(["fit", "--meta", "vote", "--name", "/abs/dir"], id="fit--name:abs")
    for bad in ["../x", "run00,../../x", "", "<b>"]:
        yield pytest.param(["fit", "--meta", "vote", "--runs", bad], id=f"fit--runs:{bad!r}")
    for bad in ["../../x", "..", "", "a b"]:
        yield pytest.param(["pseudo-label", "--ensemble", "ens", "--name", bad],
                           id=f"pseudo--name:{bad!r}")  # fmt: skip
    for bad in ["../ens", "/tmp", ""]:
        yield pytest.param(["pseudo-label", "--ensemble", bad], id=f"pseudo--ensemble:{bad!r}")
    for bad in ["../x", "../../x", "", "."]:
        yield pytest.param(["import", bad, "--oof", "o.parquet", "--test", "t.parquet"],
                           id=f"import:{bad!r}")  # fmt: skip
    for bad in ["../ens", "ens/../ens", ""]:
        yield pytest.param(["report", "--ensemble", bad], id=f"report--ensemble:{bad!r}")
    for bad in ["../x", "run00,..", "\n"]:
        yield pytest.param(["leaderboard", "--meta", "vote", "--runs", bad],
                           id=f"leaderboard--runs:{bad!r}")  # fmt: skip
    for a in ["../ens", "ensembles/../ens", "x/y/z", "runs/.."]:
        yield pytest.param(["leaderboard", "--compare", a, "ens"], id=f"compare:{a!r}")


@pytest.mark.parametrize("args", list(bad_name_cases()))
def test_a_bad_name_is_refused_in_one_line_with_nothing_touched(world, args):
    before = snapshot(world)
    res = invoke(world, args)
    assert res.exit_code == 1, res.output
    assert res.exception is None or isinstance(res.exception, SystemExit)
    lines = res.output.strip().splitlines()
    assert lines[-1].startswith("error:") and "Traceback" not in res.output
    assert "name" in lines[-1] or "--runs" in lines[-1] or "--compare" in lines[-1]
    assert snapshot(world) == before


def test_empty_name_never_becomes_a_default(world):
    res = invoke(world, ["fit", "--meta", "vote", "--name", ""])
    assert res.exit_code == 1 and "ensemble name '' is not allowed" in res.output
    assert not (world / "artifacts" / "ensembles" / "vote").exists()


@pytest.mark.parametrize("method", ["run_dir", "ensemble_dir", "pseudo_dir"])
@pytest.mark.parametrize("bad", ["..", "../x", "", "/etc", "a/b", "x\n"])
def test_store_paths_refuse_bad_names(tmp_path, method, bad):
    with pytest.raises(StackkitError, match="is not allowed"):
        getattr(Store(tmp_path), method)(bad)


# --------------------------------------------------------------------------------------------
# symlinks planted in the folder


def test_a_run_linked_to_outside_is_refused_and_left_out(world):
    art = world / "artifacts"
    shutil.copytree(art / "runs" / "run00", world / "outside" / "evil")
    (art / "runs" / "evil").symlink_to(world / "outside" / "evil")
    store = Store(art)
    with pytest.raises(StackkitError, match=r"symbolic link .* outside the artifacts folder"):
        store.run_dir("evil")
    assert "evil" not in store.run_names(include_incomplete=True)
    before = snapshot(world)
    res = invoke(world, ["fit", "--meta", "vote", "--runs", "run00,evil", "--name", "e2"])
    assert res.exit_code == 1 and "outside the artifacts folder" in res.output
    res = invoke(world, ["import", "evil", "--force", "--oof", "o", "--test", "t"])
    assert res.exit_code == 1 and "outside the artifacts folder" in res.output
    assert snapshot(world) == before


def test_a_link_inside_the_folder_is_fine(world):
    art = world / "artifacts"
    (art / "runs" / "alias").symlink_to(art / "runs" / "run00")
    assert "alias" in Store(art).run_names()


def test_an_ensemble_linked_to_outside_is_not_replaced(world):
    art = world / "artifacts"
    (art / "ensembles" / "linked").symlink_to(world / "outside")
    before = snapshot(world)
    res = invoke(world, ["fit", "--meta", "vote", "--name", "linked", "--force"])
    assert res.exit_code == 1 and "outside the artifacts folder" in res.output
    assert snapshot(world) == before


# --------------------------------------------------------------------------------------------
# replacing needs --force


@pytest.mark.parametrize(
    "args, what",
    [
        (["fit", "--meta", "vote", "--name", "ens", "--n-jobs", "1"], "ensemble 'ens'"),
        (["pseudo-label", "--ensemble", "ens", "--threshold", "0.2"], "pseudo set 'ens'"),
    ],
)
def test_replacing_needs_force(world, args, what):
    before = snapshot(world)
    res = invoke(world, args)
    assert res.exit_code == 1
    assert f"{what} already exists" in res.output and "pass --force to replace it" in res.output
    assert snapshot(world) == before
    res = invoke(world, [*args, "--force"])
    assert res.exit_code == 0, res.output
