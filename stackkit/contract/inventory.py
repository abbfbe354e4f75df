"""What is in ``runs/``: every run folder, its state, and which runs a command will use.

A folder under ``runs/`` is one of: a complete run (its ``run.json`` written last, on the current
``folds.parquet``), a run in progress (``shards/fold_<k>.json`` of some folds, no ``run.json``
yet), a run made on another fold assignment, or no run at all (a name the rule refuses, a link
to outside the artifacts folder, an unreadable ``run.json``). ``survey`` says which, cheaply
(``run.json`` only, not the logits); ``choose_runs`` turns ``--runs``/``--exclude`` into the runs
a command uses, and says in the log which it leaves out and why: a run is never dropped silently.

    >>> for s in survey(store, store.read_folds()):
    ...     print(s.name, s.state, s.detail, s.size)
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from stackkit.contract import schema
from stackkit.contract.errors import StackkitError
from stackkit.contract.names import is_valid_name

if TYPE_CHECKING:
    from stackkit.contract.store import Store

log = logging.getLogger(__name__)

COMPLETE, PARTIAL, OTHER_FOLDS, NOT_A_RUN = "complete", "partial", "other folds", "not a run"
SHARD_RECORD = re.compile(r"fold_(\d+)\.json")  # runs/<run>/shards/: one per finished fold


@dataclass
class RunState:
    name: str
    state: str  # COMPLETE, PARTIAL, OTHER_FOLDS or NOT_A_RUN
    detail: str  # why, in words: "2 of 3 folds done", "imported from …", "round 2 of …"
    folds_done: int | None  # finished folds (of n_folds) for a partial run
    n_folds: int
    size: int  # bytes under the folder
    model: str | None = None

    @property
    def folds_text(self) -> str:
        """``"2 of 3"`` (folds finished of the assignment's), or ``-`` where it means nothing."""
        done = self.n_folds if self.state == COMPLETE else self.folds_done
        return "-" if done is None else f"{done} of {self.n_folds}"

    @property
    def usable(self) -> bool:
        return self.state == COMPLETE

    def why_not(self) -> str:
        """One phrase: why this run is not used."""
        return {PARTIAL: "incomplete", OTHER_FOLDS: "made on another fold assignment"}.get(
            self.state, "not a run"
        ) + f" ({self.detail})"


def survey(store: Store, folds: schema.Folds) -> list[RunState]:
    """Every folder under ``runs/`` (sorted by name) with its state."""
    base = store.root / "runs"
    if not base.is_dir():
        return []
    return [_state(store, p, folds) for p in sorted(base.iterdir(), key=lambda p: p.name)]


def _state(store: Store, path: Path, folds: schema.Folds) -> RunState:
    k = folds.n_folds

    def state(s, detail, done=None, model=None):
        return RunState(path.name, s, detail, done, k, _size(path), model)

    if not is_valid_name(path.name):
        return state(NOT_A_RUN, "its name breaks the name rule")
    try:
        store.run_dir(path.name)
    except StackkitError:
        return state(NOT_A_RUN, f"a link to {path.resolve()}, outside the artifacts folder")
    if not path.is_dir():
        return state(NOT_A_RUN, "not a folder")
    info_path = path / schema.RUN_FILE
    if not info_path.is_file():
        done = _folds_done(path, k)
        return state(PARTIAL, f"{done} of {k} folds done", done)
    try:
        info = json.loads(info_path.read_text())
    except (OSError, ValueError) as exc:
        return state(NOT_A_RUN, f"{schema.RUN_FILE} unreadable: {str(exc).splitlines()[0]}")
    if not isinstance(info, dict):
        return state(NOT_A_RUN, f"{schema.RUN_FILE} is not a JSON object")
    model = info.get("model") if isinstance(info.get("model"), str) else None
    made_on = info.get("folds_hash")
    if made_on != folds.hash:
        return state(OTHER_FOLDS, f"{schema.RUN_FILE} folds_hash {str(made_on)[:12]}… does not "
                                  f"match folds.parquet's {folds.hash[:12]}…", model=model)  # fmt: skip
    return state(COMPLETE, _origin(info), model=model)


def _origin(info: dict) -> str:
    config = info.get("config") if isinstance(info.get("config"), dict) else {}
    imported = config.get("imported_from")
    if isinstance(imported, dict):
        return f"imported ({imported.get('kind', '?')} from {imported.get('oof', '?')})"
    pseudo = info.get("pseudo")
    if isinstance(pseudo, dict) and pseudo.get("name"):
        return f"round 2 of pseudo set {pseudo['name']!r}"
    return f"trained ({info.get('model', '?')})"


def _folds_done(path: Path, n_folds: int) -> int:
    d = path / "shards"
    if not d.is_dir():
        return 0
    found = {int(m.group(1)) for p in d.iterdir() if (m := SHARD_RECORD.fullmatch(p.name))}
    return len({f for f in found if f < n_folds})


def _size(path: Path) -> int:
    if path.is_symlink() or not path.is_dir():
        return path.lstat().st_size
    total = 0
    for dirpath, _, files in os.walk(path):
        for f in files:
            with contextlib.suppress(OSError):  # removed while counted
                total += os.lstat(os.path.join(dirpath, f)).st_size
    return total


def choose_runs(
    store: Store, folds: schema.Folds, runs: list[str] | None, exclude: list[str] | None = None
) -> list[str]:
    """The runs a command uses: ``runs`` (each must be a complete run on these folds; else one
    line saying what it is instead) or every complete run, less ``exclude``. The runs left out
    are logged with the reason."""
    states = {s.name: s for s in survey(store, folds)}
    exclude = list(dict.fromkeys(exclude or []))
    for r in [*(runs or []), *exclude]:
        store.run_dir(r)  # the name rule, and no link to outside
    unknown = [r for r in exclude if r not in states]
    if unknown:
        raise StackkitError(f"--exclude: no run {unknown[0]!r} in {store.root / 'runs'}")
    if runs is not None:
        if not runs:
            raise StackkitError("--runs: the run set is empty")
        for r in runs:
            s = states.get(r)
            if s is None:
                have = ", ".join(n for n, s in states.items() if s.usable) or "none"
                raise StackkitError(
                    f"--runs: unknown run {r!r} in {store.root / 'runs'} (complete runs: {have})"
                )
            if not s.usable:
                raise StackkitError(f"--runs: run {r!r} is {s.why_not()}; leave it out of --runs")
        chosen = list(dict.fromkeys(runs))
    else:
        chosen = []
        for name, s in states.items():
            if s.usable:
                chosen.append(name)
            else:
                log.warning("leaving out run %r: %s", name, s.why_not())
    for r in exclude:
        if r in chosen:
            chosen.remove(r)
            log.info("leaving out run %r: --exclude", r)
    if not chosen:
        raise StackkitError(
            f"{store.root / 'runs'}: no runs to use"
            + (" once --exclude is applied" if exclude else "")
            + " (write some with `make base` or `stackkit import`; `stackkit runs` lists them)"
        )
    return chosen
