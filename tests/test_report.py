"""stackkit report: the numbers behind it, the page it writes, and that a real browser shows it."""

from __future__ import annotations

import io
import re
import shutil
import subprocess

import numpy as np
import pytest
from PIL import Image
from sklearn.metrics import f1_score
from typer.testing import CliRunner

from stackkit.cli import app
from stackkit.contract.errors import StackkitError
from stackkit.contract.store import Store
from stackkit.data.layouts import MASK_CLASSES
from stackkit.report import plots as P
from stackkit.report import stats as S

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
OFFLINE_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--hide-scrollbars",
]  # fmt: skip


# --------------------------------------------------------------------------------------------
# the numbers


def test_reliability_and_ece_on_a_known_case():
    # 100 samples all given 0.9 to the predicted class, 60 of them right: ECE = |0.6 - 0.9|
    proba = np.tile([0.9, 0.1], (100, 1))
    y = np.r_[np.zeros(60, int), np.ones(40, int)]
    r = S.reliability(y, proba)
    assert r["ece"] == pytest.approx(0.3)
    assert r["count"][-1] == 100 and r["accuracy"][-1] == pytest.approx(0.6)


def test_error_correlation_is_pearson_and_clusters_redundant_runs(rng):
    base_a, base_b = rng.random(500) < 0.3, rng.random(500) < 0.3
    noise = lambda e: e ^ (rng.random(500) < 0.03)  # noqa: E731
    errors = np.vstack([noise(base_a), noise(base_b), noise(base_a), noise(base_b)])
    corr = S.error_correlation(errors)
    np.testing.assert_allclose(corr, np.corrcoef(errors.astype(float)), atol=1e-12)
    order = list(S.cluster_order(corr))
    assert abs(order.index(0) - order.index(2)) == 1 and abs(order.index(1) - order.index(3)) == 1
    never_wrong = S.error_correlation(np.vstack([errors[0], np.zeros(500, bool)]))
    assert never_wrong[0, 1] == 0.0 and np.isfinite(never_wrong).all()


def test_disagreement_and_confusion(rng):
    preds = rng.integers(0, 3, (3, 50))
    d = S.disagreement(preds)
    assert d[0, 1] == pytest.approx(np.mean(preds[0] != preds[1])) and (np.diag(d) == 0).all()
    cm = S.normalised_confusion(np.array([0, 0, 1, 1]), np.array([0, 1, 1, 1]), 3)
    np.testing.assert_allclose(cm, [[0.5, 0.5, 0], [0, 1, 0], [0, 0, 0]])


def test_subtasks_read_off_the_18_classes(rng):
    y = rng.integers(0, 18, 400)
    wrong_age = 6 * (y // 6) + 3 * ((y // 3) % 2) + (y + 1) % 3  # only the age is wrong
    s = S.subtask_scores(y, wrong_age)
    assert s["mask"]["accuracy"] == 1.0 and s["gender"]["macro_f1"] == 1.0
    assert s["age"]["accuracy"] == 0.0
    assert S.subtask_scores(y, y)["age"]["macro_f1"] == pytest.approx(
        f1_score(y % 3, y % 3, average="macro")
    )
    assert S.is_mask_layout(MASK_CLASSES, {}) and S.is_mask_layout(
        ["a"], {"data": {"layout": "mask"}}
    )
    assert not S.is_mask_layout([f"c{i}" for i in range(18)], {})


def test_plots_are_pngs(rng):
    r = S.reliability(rng.integers(0, 3, 50), rng.dirichlet(np.ones(3), 50))
    pngs = [
        P.fold_spread(["a", "ensemble"], [[0.5, 0.6], [0.7, 0.8]], [0.55, 0.75]),
        P.class_f1_heatmap(["x", "y"], ["a", "b"], np.array([[0.1, 0.9], [0.5, 0.5]])),
        P.confusion(["x", "y"], np.eye(2)),
        P.diversity(["a", "b"], np.eye(2), np.zeros((2, 2))),
        P.bars(["a", "b"], [0.1, -0.02], "delta"),
        P.reliability({"model": r}),
    ]
    for png in pngs:
        assert png[:8] == b"\x89PNG\r\n\x1a\n"
        assert Image.open(io.BytesIO(png)).size[0] > 100


# --------------------------------------------------------------------------------------------
# the page, built once from a tiny artifacts folder


@pytest.fixture(scope="module")
def built(tmp_path_factory, small_case):
    from stackkit.fit import fit_ensemble
    from stackkit.report.build import build_report

    root = tmp_path_factory.mktemp("report")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("STACKKIT_CACHE", str(root / "cache"))
        store = Store(root / "artifacts")
        small_case.write(store)
        fit_ensemble(store, meta="vote", name="older")
        fit_ensemble(store, meta="vote,lr", name="e1")
        path = build_report(store)  # the most recently written ensemble: e1
        yield store, path


def test_report_goes_to_the_latest_ensemble_and_holds_every_section(built):
    store, path = built
    assert path == store.ensemble_dir("e1") / "report.html"
    html = path.read_text()
    for title in ["Leaderboard", "F1 per class", "Confusion matrix", "Run diversity",
                  "Leave one run out", "learner uses", "Calibration", "Mask, gender and age"]:  # fmt: skip
        assert title in html, title
    assert "run00" in html and "none_female_60+" in html and "ECE" not in html.split("<img")[0]
    assert "95% interval" in html and "selected" in html
    # the headline is the honest estimate, before the pick's own (optimistic) CV score
    import json

    ens = json.loads((store.ensemble_dir("e1") / "ensemble.json").read_text())
    head = f"Honest estimate of the whole procedure on new samples: macro-F1 {ens['scores']['estimate_macro_f1']:.4f}"
    assert head in html and html.index(head) < html.index("The pick&#x27;s own OOF macro-F1")
    # vote and lr lose to run00 alone on this case, and the report says so
    assert "below the best single run&#x27;s own OOF macro-F1 (run00" in html
    assert "enters with the predictions behind its honest estimate" in html
    assert len(re.findall(r'<img src="data:image/png;base64,', html)) == 7
    assert "<script" not in html.lower() and not re.search(r'(src|href)="https?:', html)
    assert not list(path.parent.glob(".*.tmp"))  # written atomically


def test_report_in_a_real_headless_browser(built, tmp_path):
    if CHROMIUM is None:
        pytest.skip("no chromium installed (apt-get install chromium); .ci/run installs it")
    _, path = built
    flags = [CHROMIUM, *OFFLINE_FLAGS, f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run([*flags, "--dump-dom", path.as_uri()], capture_output=True, text=True,
                         timeout=60, check=True).stdout  # fmt: skip
    assert dom.count('src="data:image/png;base64,') == 7 and "Calibration" in dom
    shot = tmp_path / "shot.png"
    subprocess.run([*flags, f"--screenshot={shot}", "--window-size=1200,3000", path.as_uri()],
                   capture_output=True, timeout=60, check=True)  # fmt: skip
    img = np.asarray(Image.open(shot).convert("RGB"), dtype=np.int16)
    assert img.shape[:2] == (3000, 1200)
    colourful = (img.max(axis=2) - img.min(axis=2)) > 60  # plot pixels, not black-on-white text
    assert colourful.mean() > 0.01, "the screenshot shows no plots"
    assert (img.sum(axis=2) < 200).mean() > 0.002, "the screenshot shows no text"


def test_cli_report_of_a_single_run_ensemble(built, tmp_path):
    from stackkit.fit import fit_ensemble

    store, _ = built
    fit_ensemble(store, meta="vote", runs=["run01"], name="solo")
    out = tmp_path / "solo.html"
    args = ["report", "--ensemble", "solo", "--out", str(out), "--artifacts", str(store.root)]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    assert res.stdout.strip() == str(out)
    html = out.read_text()
    assert "Run diversity" not in html and "Calibration" in html  # nothing to compare with
    assert not store.ensemble_dir("solo").joinpath("report.html").exists()
    res = CliRunner().invoke(app, ["report", "--ensemble", "nope", "--artifacts", str(store.root)])
    assert res.exit_code == 1 and "'nope' not found" in res.stderr


def test_cli_leaderboard_compare(built):
    store, _ = built
    args = ["leaderboard", "--compare", "e1", "run02", "--artifacts", str(store.root)]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    assert res.stdout.startswith("e1 - run02 = +") and "95% interval" in res.stdout


def test_no_ensemble_is_a_clear_error(store):
    from stackkit.report.build import build_report

    with pytest.raises(StackkitError, match="no ensembles to report on"):
        build_report(store)
