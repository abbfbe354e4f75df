"""Finished folds on disk, so an interrupted run resumes where it stopped.

    runs/<run>/shards/fold_<k>.oof.parquet    sample_id, fold, logit_*: that fold's OOF rows
    runs/<run>/shards/fold_<k>.test.parquet   sample_id, fold, logit_*: its test rows
    runs/<run>/shards/fold_<k>.json           config hash, kept epoch, scores, ids trained on

Each file is written whole (temporary name, then rename) and the JSON goes last: a shard counts
as finished only when its JSON is there and names the same config hash.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from stackkit.contract.store import read_parquet, write_json, write_parquet

SHARD_DIR = "shards"


def shard_files(run_dir: Path, fold: int) -> tuple[Path, Path, Path]:
    d = Path(run_dir) / SHARD_DIR
    return d / f"fold_{fold}.oof.parquet", d / f"fold_{fold}.test.parquet", d / f"fold_{fold}.json"


def read_record(run_dir: Path, fold: int) -> dict | None:
    oof, test, rec = shard_files(run_dir, fold)
    if not (rec.is_file() and oof.is_file() and test.is_file()):
        return None
    try:
        return json.loads(rec.read_text())
    except json.JSONDecodeError:
        return None


def finished(run_dir: Path, fold: int, config_hash: str) -> bool:
    rec = read_record(run_dir, fold)
    return rec is not None and rec.get("config_hash") == config_hash


def any_shard(run_dir: Path) -> bool:
    d = Path(run_dir) / SHARD_DIR
    return d.is_dir() and any(d.glob("fold_*.json"))


def write_shard(
    run_dir: Path, fold: int, oof: pd.DataFrame, test: pd.DataFrame, record: dict
) -> None:
    oof_path, test_path, rec_path = shard_files(run_dir, fold)
    rec_path.unlink(missing_ok=True)  # unfinished until the record is rewritten
    write_parquet(oof, oof_path)
    write_parquet(test, test_path)
    write_json(record, rec_path)


def assemble(run_dir: Path, n_folds: int) -> tuple[pd.DataFrame, pd.DataFrame, list[dict]]:
    """Every fold's OOF rows, every fold's test rows, and the fold records, in fold order."""
    oofs, tests, records = [], [], []
    for k in range(n_folds):
        oof_path, test_path, _ = shard_files(run_dir, k)
        oofs.append(read_parquet(oof_path, str(oof_path))[0])
        tests.append(read_parquet(test_path, str(test_path))[0])
        records.append(read_record(run_dir, k))
    return pd.concat(oofs, ignore_index=True), pd.concat(tests, ignore_index=True), records
