"""The CLI as a person reads it: flags shown as flags, tables drawn once, each candidate's score
printed once, no third-party warning text (stackkit/cli.py, stackkit/tables.py)."""

from __future__ import annotations

import logging
import math
import sys

import pytest
import typer
from typer.testing import CliRunner

from stackkit.cli import app
from stackkit.tables import format_table

runner = CliRunner()
COMMANDS = sorted(typer.main.get_command(app).commands)


@pytest.mark.parametrize("command", COMMANDS)
def test_help_shows_flags_as_flags(command):
    res = runner.invoke(app, [command, "--help"])
    assert res.exit_code == 0, res.output
    assert "<bool>" not in res.output
    assert "--help  " in res.output or res.output.rstrip().endswith("--help")
    flags = {"fit": "--force", "leaderboard": "--no-loro", "pseudo-label": "--balance"}
    if command in flags:  # the flag's line holds no value placeholder
        line = next(x for x in res.output.splitlines() if x.strip().startswith(flags[command]))
        assert "<" not in line


def test_format_table_aligns_numbers_and_marks_missing():
    rows = [{"meta": "lr", "f1": 0.5, "pick": "<- best"}, {"meta": "caruana", "f1": math.nan, "pick": ""},
            {"meta": "vote", "f1": None, "pick": ""}]  # fmt: skip
    text = format_table(rows, [("meta", "meta", ""), ("f1", "CV macro-F1", ".4f"),
                               ("pick", "", "")], title="meta candidates")  # fmt: skip
    lines = text.splitlines()
    assert lines[0] == "meta candidates"
    assert lines[1].split() == ["meta", "CV", "macro-F1"]
    body = lines[3:]
    assert body[0].split() == ["lr", "0.5000", "<-", "best"]
    assert body[1].split() == ["caruana", "-"] and body[2].split() == ["vote", "-"]
    # numbers right-aligned under their header's right edge
    end = lines[1].index("macro-F1") + len("macro-F1")
    assert body[0].index("0.5000") + 6 == end and body[1].rstrip().endswith("-")
    assert len(body[1].rstrip()) == end
    assert all(line == line.rstrip() for line in lines)


def test_format_table_never_wraps_a_wide_row():
    row = {f"c{i}": "x" * 12 for i in range(12)}
    text = format_table([row], [(k, k, "") for k in row])
    assert len(text.splitlines()) == 3 and len(text.splitlines()[2]) > 150


def test_fit_prints_each_candidate_score_once(store):
    res = runner.invoke(app, ["fit", "--meta", "vote,caruana,lr,blend", "--name", "once",
                              "--artifacts", str(store.root), "--no-cache"])  # fmt: skip
    assert res.exit_code == 0, res.output
    import json

    board = json.loads((store.ensemble_dir("once") / "leaderboard.json").read_text())
    for cand in board["candidates"]:
        score = f"{cand['cv_macro_f1']:.4f}"
        row = [line for line in res.stdout.splitlines() if line.startswith(cand["meta"] + " ")]
        assert len(row) == 1 and score in row[0]
        assert score not in res.stderr  # not also as a log line
    assert "Warning" not in res.stderr


def test_leaderboard_names_macro_f1_and_drops_loro_when_not_computed(store):
    args = ["leaderboard", "--meta", "vote,lr", "--artifacts", str(store.root)]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    header = next(line for line in res.stdout.splitlines() if line.startswith("run "))
    assert "macro-F1 lost without it (" in header
    rows = [line for line in res.stdout.splitlines() if line.startswith("run0")]
    assert len(rows) == 3 and all(line.split()[-1][0] in "+-" for line in rows)

    res = runner.invoke(app, [*args, "--no-loro"])
    assert res.exit_code == 0, res.output
    header = next(line for line in res.stdout.splitlines() if line.startswith("run "))
    assert "without it" not in header and "loro" not in header
    assert header.split()[-2:] == ["log", "loss"]


def test_a_learner_warning_is_one_line_in_our_words(store):
    res = runner.invoke(app, ["fit", "--meta", "lr", "--param", "lr.max_iter=2", "--name", "w",
                              "--artifacts", str(store.root), "--no-cache", "--n-jobs", "1"])  # fmt: skip
    assert res.exit_code == 0, res.output
    said = [line for line in res.stderr.splitlines() if "converge" in line]
    # five folds and the refit on all rows, one line
    assert said == [said[0]] and said[0].startswith(
        "W stackkit.cv.stacking: lr: 6 of 6 fits warned"
    )
    assert "lbfgs failed to converge" in said[0]
    assert "ConvergenceWarning" not in res.stderr and "sklearn/" not in res.stderr


def test_matplotlib_chatter_is_silenced(store):
    res = runner.invoke(app, ["runs", "--artifacts", str(store.root)])
    assert res.exit_code == 0, res.output
    assert logging.getLogger("matplotlib").getEffectiveLevel() >= logging.ERROR
    assert res.stdout.splitlines()[0].split() == ["run", "state", "folds", "size"]


@pytest.mark.parametrize("command", [[], ["prepare"], ["run-fold"], ["assemble"]])
def test_the_runners_help_shows_flags_as_flags_too(command):
    from base_models.cli import app as runner_app
    from base_models.cli import jobs_app

    res = runner.invoke(jobs_app if command else runner_app, [*command, "--help"])
    assert res.exit_code == 0, res.output
    assert "<bool>" not in res.output and "--help  " in res.output


def test_log_lines_after_a_captured_run_go_to_the_current_stderr(capsys):
    """After CliRunner closed the stream it captured, later log lines still print cleanly."""
    import logging

    from typer.testing import CliRunner

    from stackkit.cli import app

    CliRunner().invoke(app, ["runs", "--artifacts", "/nonexistent-artifacts"])
    logging.getLogger("stackkit.test").warning("still heard")
    err = capsys.readouterr().err
    assert "still heard" in err
    assert "Logging error" not in err


def test_log_lines_go_through_tqdm_once_a_bar_may_be_drawn(monkeypatch, capsys):
    """Log lines print above a progress bar (tqdm.write), and tqdm is not imported for that."""
    import logging

    import tqdm

    from stackkit.cli import configure_logging

    written = []
    monkeypatch.setattr(
        tqdm.tqdm, "write", classmethod(lambda cls, s, file=None: written.append(s))
    )
    configure_logging(logging.INFO)
    logging.getLogger("stackkit.test").warning("above the bar")
    assert written == ["W stackkit.test: above the bar"]
    monkeypatch.delitem(sys.modules, "tqdm")
    logging.getLogger("stackkit.test").warning("plain")
    assert "W stackkit.test: plain" in capsys.readouterr().err
    assert written == ["W stackkit.test: above the bar"]
