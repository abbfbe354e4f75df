"""A shared artifacts folder, used adversarially: names that try to escape, symlinks planted,
replacing without --force. Each bad input is a row of a table; each must be refused in one
line, with nothing written, replaced or deleted anywhere."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from stackkit.cli import app
from stackkit.contract.errors import StackkitError
from stackkit.contract.store import Store, atomic_dir, atomic_path
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


# --------------------------------------------------------------------------------------------
# crashes and concurrent commands

PY = sys.executable


def _env() -> dict:
    root = str(Path(__file__).resolve().parents[1])
    return {**os.environ, "PYTHONPATH": os.pathsep.join([root, os.environ.get("PYTHONPATH", "")])}


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")  # a zombie nobody reaps is dead too


WORKERS = """
import os, sys, time
from joblib import Parallel, delayed
from stackkit.cv.engine import parallel_backend

def job(d):
    open(os.path.join(d, str(os.getpid())), "w").close()
    time.sleep(120)

with parallel_backend("local"):
    Parallel(n_jobs=2)(delayed(job)(sys.argv[1]) for _ in range(2))
"""


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")
def test_workers_exit_when_their_parent_is_killed(tmp_path):
    (tmp_path / "w.py").write_text(WORKERS)
    (tmp_path / "pids").mkdir()
    proc = subprocess.Popen([PY, str(tmp_path / "w.py"), str(tmp_path / "pids")], env=_env())
    try:
        deadline = time.monotonic() + 90
        while len(list((tmp_path / "pids").iterdir())) < 2:
            assert time.monotonic() < deadline and proc.poll() is None, "workers never started"
            time.sleep(0.1)
        pids = [int(p.name) for p in (tmp_path / "pids").iterdir()]
        assert all(_alive(p) for p in pids)
    finally:
        proc.kill()  # SIGKILL: no cleanup runs in the parent
        proc.wait()
    deadline = time.monotonic() + 10
    while any(_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(_alive(p) for p in pids), "workers outlived their parent"


HOLD = """
import sys, time
from stackkit.contract.locks import hold
with hold(sys.argv[1], "ensemble 'ens'"):
    print("held", flush=True)
    time.sleep(120)
"""


def test_a_second_fit_of_one_name_fails_naming_the_holder(world):
    from stackkit.contract.locks import lock_path

    art = world / "artifacts"
    lock = lock_path(Store(art).ensemble_dir("ens"))
    holder = subprocess.Popen([PY, "-c", HOLD, str(lock)], stdout=subprocess.PIPE, text=True,
                              env=_env())  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "held"
        before = snapshot(art / "ensembles" / "ens")
        res = invoke(world, ["fit", "--meta", "vote", "--name", "ens", "--force", "--n-jobs", "1"])
        assert res.exit_code == 1
        (line,) = res.output.strip().splitlines()
        assert f"ensemble 'ens' is being written by process {holder.pid} of " in line
        assert str(lock) in line
        assert snapshot(art / "ensembles" / "ens") == before
    finally:
        holder.kill()  # a lock dies with its holder, whatever kills it
        holder.wait()
    res = invoke(world, ["fit", "--meta", "vote", "--name", "ens", "--force", "--n-jobs", "1"])
    assert res.exit_code == 0, res.output
    assert not lock.with_name(lock.name + ".holder").exists()


def test_a_killed_writers_leftovers_are_cleared_under_the_lock(world):
    store = Store(world / "artifacts")
    ens = store.ensemble_dir("ens")
    mine = [ens.with_name(".ens.0123456789ab.tmp"), ens.with_name(".ens.abcdef012345.old")]
    for p in mine:
        p.mkdir()
    theirs = ens.with_name(".ens.x.0123456789ab.tmp")  # ensemble 'ens.x' is another's
    theirs.mkdir()
    with store.writing(ens, "ensemble 'ens'", force=True):
        assert not any(p.exists() for p in mine)
    assert theirs.exists()


SWAPPER = """
import sys
from pathlib import Path
from stackkit.contract.store import atomic_dir
path, me, n = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
for i in range(n):
    with atomic_dir(path) as tmp:
        (tmp / "a").write_text(f"{me} {i}")
        (tmp / "b").write_text(f"{me} {i}")
"""


def test_atomic_dir_is_safe_under_contention(tmp_path):
    """Four processes replace one folder 30 times each while this one reads it: every swap
    succeeds, the folder is never missing, never mixed, and nothing is left beside it."""
    path = tmp_path / "ens"
    writers = [
        subprocess.Popen([PY, "-c", SWAPPER, str(path), str(w), "30"], env=_env()) for w in range(4)
    ]
    seen = missing = mixed = 0
    while any(w.poll() is None for w in writers):
        if not path.exists():
            missing += seen > 0  # before the first swap there is nothing yet
            continue
        try:
            fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        except FileNotFoundError:
            missing += 1
            continue
        try:
            a = Path(f"/proc/self/fd/{fd}/a").read_text()
            b = Path(f"/proc/self/fd/{fd}/b").read_text()
            seen += 1
            mixed += a != b
        except FileNotFoundError:  # swapped out and being removed while read: not an error
            pass
        finally:
            os.close(fd)
    assert [w.returncode for w in writers] == [0] * 4
    assert missing == 0 and mixed == 0 and seen > 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ens"]
    assert sorted(p.name for p in path.iterdir()) == ["a", "b"]


def test_atomic_dir_without_an_atomic_exchange(tmp_path, monkeypatch):
    from stackkit.contract import store as store_mod

    monkeypatch.setattr(store_mod, "_renameat2", None)
    d = tmp_path / "ens"
    for content in ("1", "2"):
        with atomic_dir(d) as tmp:
            (tmp / "x").write_text(content)
    assert (d / "x").read_text() == "2"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ens"]


# --------------------------------------------------------------------------------------------
# the umask decides who can read what is written


@pytest.mark.parametrize("mask", [0o022, 0o077, 0o002])
def test_files_and_folders_follow_the_umask(tmp_path, small_case, mask):
    old = os.umask(mask)
    try:
        with atomic_path(tmp_path / "f.json") as tmp:
            tmp.write_text("{}")
        with atomic_dir(tmp_path / "d") as tmp:
            (tmp / "x").write_text("1")
        store = Store(tmp_path / "artifacts")
        small_case.write(store)
        fit_ensemble(store, meta="vote", name="v", n_jobs=1, use_cache=False)
    finally:
        os.umask(old)
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    dirs = [p for p in tmp_path.rglob("*") if p.is_dir()]
    assert len(files) > 10 and (tmp_path / "artifacts" / "ensembles" / "v") in dirs
    assert {oct(p.stat().st_mode & 0o777) for p in files} == {oct(0o666 & ~mask)}
    assert {oct(p.stat().st_mode & 0o777) for p in dirs} == {oct(0o777 & ~mask)}


LOCKER = """
import os, sys, time
from pathlib import Path
from stackkit.contract.errors import StackkitError
from stackkit.contract.locks import hold
lock, inside = Path(sys.argv[1]), Path(sys.argv[2])
held = 0
for _ in range(200):
    try:
        with hold(lock, "x"):
            fd = os.open(inside, os.O_CREAT | os.O_EXCL | os.O_WRONLY)  # fails if two hold it
            os.close(fd)
            time.sleep(0.001)
            inside.unlink()
            held += 1
    except StackkitError:
        pass
print(held)
"""


def test_the_lock_admits_one_holder_and_leaves_nothing(tmp_path):
    lock, inside = tmp_path / "ensembles" / ".e.lock", tmp_path / "inside"
    procs = [
        subprocess.Popen(
            [PY, "-c", LOCKER, str(lock), str(inside)],
            env=_env(),
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    outs = [p.communicate(timeout=120)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], outs
    assert sum(int(o) for o in outs) > 0
    # no lock, no note left; the folder itself is gone too when the last holder had made it
    assert not inside.exists()
    assert not lock.parent.exists() or list(lock.parent.iterdir()) == []


# --------------------------------------------------------------------------------------------
# reruns


def test_the_same_rows_give_the_same_pseudo_set_hash(world):
    from stackkit.pseudo import pseudo_label

    store = Store(world / "artifacts")
    first = store.read_pseudo("ens", store.read_folds())[1]
    again = pseudo_label(store, "ens", threshold=0.2, force=True)
    assert again.meta["rows_hash"] == first["rows_hash"]
    assert again.meta["ensemble_hash"] == first["ensemble_hash"]


def test_a_failing_demo_step_is_one_line_not_a_traceback(tmp_path):
    data = tmp_path / "data"
    (data / "train").mkdir(parents=True)
    (data / "train" / "train.csv").write_text("id,gender,race,age,path\n")  # no people at all
    res = subprocess.run(
        [PY, "-m", "base_models.demo", "--data", str(data), "--artifacts", str(tmp_path / "a")],
        env=_env(), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert res.returncode == 1
    assert "Traceback" not in res.stderr + res.stdout
    errors = [line for line in res.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 2, res.stderr  # the step's own line, then which step it was
    assert errors[1] == (
        "error: step 'one fold assignment' failed (exit code 1); its error is above"
    )


@pytest.mark.slow
def test_the_demo_twice_in_a_row_retrains_nothing(tmp_path, monkeypatch, capfd):
    """The whole demo loop, shrunk (30 people, two tiny backbones, one epoch), run twice."""
    from base_models import demo

    monkeypatch.setattr(demo, "PEOPLE", 30)
    monkeypatch.setattr(demo, "EVAL_PEOPLE", 10)
    monkeypatch.setattr(demo, "RUNS", [("a", "test_resnet", "32x24", 1, []),
                                       ("b", "test_efficientnet", "32x24", 1, [])])  # fmt: skip
    monkeypatch.setattr(demo, "ROUND2", "a")
    monkeypatch.setattr(demo, "MULTITASK", "a")  # the demo's multi-task run, of backbone a
    monkeypatch.setattr(demo, "THRESHOLD", 0.05)
    monkeypatch.setenv("PYTHONPATH", _env()["PYTHONPATH"])
    monkeypatch.setenv("STACKKIT_CACHE", str(tmp_path / "cache"))
    args = ["--data", str(tmp_path / "data"), "--artifacts", str(tmp_path / "art")]
    assert demo.cli(args) == 0, capfd.readouterr().err
    runs = tmp_path / "art" / "runs"
    trained = {str(p): p.stat().st_mtime_ns for p in runs.rglob("*") if p.is_file()}
    assert {p.name for p in runs.iterdir()} == {"a", "b", "a_mt", "a_r2"}
    capfd.readouterr()
    assert demo.cli(args) == 0, capfd.readouterr().err
    out = capfd.readouterr()
    assert "Traceback" not in out.out + out.err and "before / after" in out.out
    again = {str(p): p.stat().st_mtime_ns for p in runs.rglob("*") if p.is_file()}
    assert again == trained  # no run, no shard rewritten: nothing retrained


# --------------------------------------------------------------------------------------------
# runs that would disappear


def _edit_run(art: Path, src: str, dst: str, **changes) -> None:
    shutil.copytree(art / "runs" / src, art / "runs" / dst)
    info = json.loads((art / "runs" / dst / "run.json").read_text())
    info.update(changes, run=dst)
    (art / "runs" / dst / "run.json").write_text(json.dumps(info))


@pytest.fixture
def crowd(world):
    """Besides run00-02: a partial run, one made on other folds, an imported one, a round-2 one,
    a folder with a bad name and a link to outside."""
    art = world / "artifacts"
    shutil.copytree(art / "runs" / "run00", art / "runs" / "partial")
    (art / "runs" / "partial" / "run.json").unlink()
    (art / "runs" / "partial" / "shards").mkdir()
    for k in (0, 3):
        (art / "runs" / "partial" / "shards" / f"fold_{k}.json").write_text("{}")
    _edit_run(art, "run01", "otherfolds", folds_hash="0" * 64)
    _edit_run(art, "run00", "ext", config={"imported_from": {"oof": "o.parquet", "kind": "proba"}})
    _edit_run(art, "run02", "r2", pseudo={"name": "ens", "n_rows": 3})
    (art / "runs" / "a b").mkdir()
    (art / "runs" / "evil").symlink_to(world / "outside")
    return world


def test_runs_lists_every_folder_with_its_state(crowd):
    res = invoke(crowd, ["runs"])
    assert res.exit_code == 0, res.output
    lines = {line.split()[0]: line for line in res.output.splitlines()[2:] if line.strip()}
    assert "complete" in lines["run00"] and "5 of 5" in lines["run00"]
    assert "partial" in lines["partial"] and "2 of 5 folds done" in lines["partial"]
    assert (
        "other folds" in lines["otherfolds"]
        and "folds_hash 000000000000… does not" in lines["otherfolds"]
    )
    assert "imported (proba from o.parquet)" in lines["ext"]
    assert "round 2 of pseudo set 'ens'" in lines["r2"]
    assert "outside the artifacts folder" in lines["evil"]
    assert any("breaks the name rule" in v for v in lines.values())
    assert " KB" in lines["run00"]
    assert "5 of 9 run folders are complete runs" in res.output


def test_fit_says_which_runs_it_leaves_out_and_why(crowd):
    res = invoke(crowd, ["fit", "--meta", "vote", "--name", "all", "--n-jobs", "1"])
    assert res.exit_code == 0, res.output
    assert "leaving out run 'partial': incomplete (2 of 5 folds done)" in res.output
    assert "leaving out run 'otherfolds': made on another fold assignment" in res.output
    assert "leaving out run 'evil': not a run" in res.output
    ens = json.loads((crowd / "artifacts" / "ensembles" / "all" / "ensemble.json").read_text())
    assert [r["run"] for r in ens["inputs"]["runs"]] == ["ext", "r2", "run00", "run01", "run02"]


def test_exclude_leaves_runs_out(crowd):
    args = ["fit", "--meta", "vote", "--name", "few", "--n-jobs", "1", "--exclude", "ext,r2"]
    assert invoke(crowd, args).exit_code == 0
    ens = json.loads((crowd / "artifacts" / "ensembles" / "few" / "ensemble.json").read_text())
    assert [r["run"] for r in ens["inputs"]["runs"]] == ["run00", "run01", "run02"]
    res = invoke(crowd, ["leaderboard", "--meta", "vote", "--no-loro", "--exclude", "run00,ext"])
    assert res.exit_code == 0, res.output
    table = res.output.split("meta candidates")[0]
    assert "run00" not in table.split("runs (own OOF predictions)")[1] and "run01" in table


@pytest.mark.parametrize(
    "args, message",
    [
        (["--runs", "partial"], "--runs: run 'partial' is incomplete (2 of 5 folds done)"),
        (["--runs", "run00,otherfolds"], "run 'otherfolds' is made on another fold assignment"),
        (["--runs", "nope"], "--runs: unknown run 'nope'"),
        (["--exclude", "nope"], "--exclude: no run 'nope'"),
        (["--exclude", "../x"], "run name '../x' is not allowed"),
        (["--exclude", "run00,run01,run02,ext,r2"], "no runs to use once --exclude is applied"),
    ],
)
@pytest.mark.parametrize("command", ["fit", "leaderboard"])
def test_a_run_that_cannot_be_used_is_named_with_the_reason(crowd, command, args, message):
    before = snapshot(crowd)
    res = invoke(crowd, [command, "--meta", "vote", *args])
    assert res.exit_code == 1
    assert message in res.output.strip().splitlines()[-1]
    assert snapshot(crowd) == before
