"""The notebook's front door: an artifacts folder and the loop as its methods.

``stackkit.open(path)`` gives an :class:`Artifacts`; each method is what a ``stackkit`` command
does there, with the same parameter names, returning the result instead of printing it. Results
that are tables have ``to_frame()`` (a pandas DataFrame) and show as HTML in Jupyter.

    >>> import stackkit
    >>> art = stackkit.open("artifacts")              # or None: $STACKKIT_ARTIFACTS, ./artifacts
    >>> art.runs()                                    # every run folder and its state
    >>> res = art.fit(meta="auto", write=False)       # try options, write nothing
    >>> res.to_frame()                                # one row per candidate
    >>> art.leaderboard(meta="vote,lr").to_frame()

(Methods, not functions of ``stackkit``: ``stackkit.fit``, ``.leaderboard``, ``.compare`` and
``.report`` are the modules that implement them.)
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd
    from sklearn.base import BaseEstimator

    from stackkit.compare import Comparison
    from stackkit.contract.store import RunSet, Store
    from stackkit.fit import FitResult
    from stackkit.leaderboard import Leaderboard
    from stackkit.pseudo import PseudoSet


def open(artifacts: str | os.PathLike | None = None) -> Artifacts:
    """The artifacts folder ``artifacts`` (None: ``$STACKKIT_ARTIFACTS``, else ./artifacts).
    Nothing is read until a method asks for it.

    >>> art = stackkit.open("artifacts")
    >>> art.root, art.store.run_names()
    """
    return Artifacts(artifacts)


class Artifacts:
    """An artifacts folder and the loop over it. ``store`` is its
    :class:`~stackkit.contract.store.Store` (every read and write of the contract goes through
    it); in Jupyter it shows as its table of runs.

    >>> art = stackkit.open("artifacts")
    >>> art.fit(meta="auto", write=False).to_frame()
    """

    def __init__(self, root: str | os.PathLike | Store | None = None):
        from stackkit.contract.store import Store

        self.store = root if isinstance(root, Store) else Store(root)

    @property
    def root(self) -> Path:
        return self.store.root

    def __repr__(self) -> str:
        return f"stackkit.open({str(self.root)!r})"

    def _repr_html_(self) -> str:
        from html import escape

        return f"<p>{escape(repr(self))}</p>\n" + self.runs().to_html(index=False)

    def runs(self) -> pd.DataFrame:
        """Every folder under ``runs/`` with its state, as ``stackkit runs`` lists them: ``run``,
        ``state`` (complete, partial, other-folds, not-a-run), ``folds`` done, ``size`` in bytes,
        ``model``, ``detail``.

        >>> art.runs().query("state == 'complete'")
        """
        import pandas as pd

        from stackkit.contract.inventory import survey

        store = self.store
        rows = [{"run": s.name, "state": s.state, "folds": s.folds_text, "size": s.size,
                 "model": s.model, "detail": s.detail}
                for s in survey(store, store.read_folds())]  # fmt: skip
        return pd.DataFrame(rows, columns=["run", "state", "folds", "size", "model", "detail"])

    def load_runs(self, runs: list[str] | None = None, exclude: list[str] | None = None) -> RunSet:
        """The runs' OOF and test logits, validated and aligned to folds.parquet: a
        :class:`~stackkit.contract.store.RunSet` (``oof`` (R, n, C), ``test`` (R, K, m, C),
        ``folds``, ``names``). Default: every complete run on these folds, less ``exclude``.

        >>> rs = art.load_runs(runs=["run00", "run01"])
        >>> rs.oof.shape, rs.folds.n_classes
        """
        from stackkit.contract.inventory import choose_runs

        store = self.store
        folds = store.read_folds()
        return store.load_runs(choose_runs(store, folds, runs, exclude), folds)

    def fit(
        self,
        meta: str | list[str] = "auto",
        *,
        runs: list[str] | None = None,
        exclude: list[str] | None = None,
        name: str | None = None,
        params: Mapping[str, dict] | None = None,
        tune_bias: bool = False,
        nested: bool = False,
        n_jobs: int | None = None,
        use_cache: bool = True,
        force: bool = False,
        write: bool = True,
    ) -> FitResult:
        """``stackkit fit``: cross-validate the meta learners, pick one, refit it. With
        ``write=True`` (the default) ``ensembles/<name>/`` is written whole (``force`` replaces an
        existing one); ``write=False`` returns the same result and writes nothing.

        >>> res = art.fit(meta="vote,lr,caruana", tune_bias=True, write=False)
        >>> res.selected.meta, res.estimate.macro_f1    # the pick, and the honest estimate
        >>> res.to_frame()                              # one row per candidate
        """
        from stackkit.fit import fit_ensemble

        return fit_ensemble(self.store, meta=meta, runs=runs, name=name, params=dict(params or {}),
                            tune_bias=tune_bias, nested=nested, n_jobs=n_jobs, use_cache=use_cache,
                            force=force, exclude=exclude, write=write)  # fmt: skip

    def leaderboard(
        self,
        meta: str | list[str] = "auto",
        *,
        runs: list[str] | None = None,
        exclude: list[str] | None = None,
        params: Mapping[str, dict] | None = None,
        loro: bool = True,
        n_jobs: int | None = None,
        use_cache: bool = True,
    ) -> Leaderboard:
        """``stackkit leaderboard``: every run on its own OOF predictions and every meta candidate
        cross-validated over the stored folds, with leave-one-run-out (``loro``). Writes nothing.

        >>> board = art.leaderboard(meta="vote,lr")
        >>> board.to_frame()            # candidates, best first
        >>> board.to_frame("runs")      # runs, with loro_delta: macro-F1 lost without each
        """
        from stackkit.leaderboard import leaderboard as board

        return board(self.store, runs=runs, meta=meta, params=dict(params or {}), loro=loro,
                     n_jobs=n_jobs, use_cache=use_cache, exclude=exclude)  # fmt: skip

    def compare(self, a: str, b: str, n_boot: int = 2000, seed: int = 0) -> Comparison:
        # n_boot: stackkit.compare.N_BOOT (tests/test_api.py keeps the two the same)
        """``stackkit leaderboard --compare A B``: macro-F1 of ``a`` minus ``b`` (ensembles or runs)
        with a 95% interval from a paired bootstrap over groups (people).

        >>> c = art.compare("auto", "run00")
        >>> c.diff, c.low, c.high
        >>> c.to_frame()
        """
        from stackkit.compare import compare as compare_fn

        return compare_fn(self.store, a, b, n_boot=n_boot, seed=seed)

    def report(self, ensemble: str | None = None, out: str | os.PathLike | None = None) -> Path:
        """``stackkit report``: one self-contained HTML page about ``ensemble`` (default: the most
        recently written); returns its path (default ``ensembles/<name>/report.html``).

        >>> path = art.report("auto")
        >>> from IPython.display import IFrame; IFrame(path, 900, 600)
        """
        from stackkit.report.build import build_report

        return build_report(self.store, ensemble=ensemble, out=out)

    def pseudo_label(
        self,
        ensemble: str,
        threshold: float = 0.9,  # stackkit.pseudo.DEFAULT_THRESHOLD (test_api keeps them equal)
        *,
        max_per_class: int | None = None,
        class_thresholds: Mapping[str, float] | None = None,
        balance: bool = False,
        name: str | None = None,
        force: bool = False,
    ) -> PseudoSet:
        """``stackkit pseudo-label``: confident test samples of a written ensemble, chosen per fold
        (fold k's labels from the meta learner fitted without fold k); writes
        ``pseudo/<name>/pseudo.parquet``.

        >>> ps = art.pseudo_label("auto", threshold=0.8)
        >>> ps.to_frame()       # per class: candidates, chosen, mean confidence
        >>> ps.frame            # the rows: sample_id, fold, label, confidence
        """
        from stackkit.pseudo import pseudo_label as label

        return label(self.store, ensemble, threshold=threshold, max_per_class=max_per_class,
                     class_thresholds=class_thresholds, name=name, balance=balance,
                     force=force)  # fmt: skip


def make_learner(name: str, n_classes: int, **params) -> BaseEstimator:
    """An unfitted meta learner by name (vote, caruana, lr, svm, knn, rf, xgboost): a
    scikit-learn estimator over run-major OOF logits, (n, R*C). Each parameter is checked by the
    learner's own scikit-learn constraints.

    >>> lr = stackkit.make_learner("lr", n_classes=18, C=0.1)
    >>> from sklearn.model_selection import cross_val_predict, PredefinedSplit
    >>> cross_val_predict(lr, X, y, cv=PredefinedSplit(fold_ids), method="predict_proba")
    """
    from stackkit.meta.registry import make_learner as make

    return make(name, n_classes=n_classes, params=params)
