"""stackkit: ensembling and stacking image classifiers over out-of-fold logits.

The names a notebook needs (documented in :mod:`stackkit.api`, each with an example):

    >>> import stackkit
    >>> art = stackkit.open("artifacts")                 # an artifacts folder
    >>> art                                              # in Jupyter: its runs, as a table
    >>> runset = art.load_runs()                         # OOF and test logits, validated
    >>> res = art.fit(meta="auto", write=False)          # a FitResult; res.to_frame()
    >>> art.leaderboard().to_frame()
    >>> art.compare("auto", "run00").to_frame()
    >>> art.pseudo_label("auto", threshold=0.8)
    >>> art.report("auto")                               # the HTML page's path
    >>> stackkit.make_learner("lr", n_classes=18)        # a scikit-learn estimator

They load on first use (PEP 562), so ``import stackkit`` stays light: no scikit-learn until a
name is used, and never torch or timm (those belong to ``base_models``).
"""

__version__ = "0.1.0"

__all__ = ["Artifacts", "StackkitError", "make_learner", "open"]
_API = {"Artifacts", "make_learner", "open"}  # in stackkit.api


def __getattr__(name: str):
    if name in _API:
        from stackkit import api

        return getattr(api, name)
    if name == "StackkitError":
        from stackkit.contract.errors import StackkitError

        return StackkitError
    raise AttributeError(f"module 'stackkit' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
