"""The meta learners: what turns the runs' stored OOF logits into one probability per class.

One module per learner family (``vote``, ``linear``: lr and svm, ``knn``, ``trees``: rf and
xgboost, ``caruana``: greedy ensemble selection), their run features, the per-class ``bias``
offsets, every default in ``defaults``, and the ``registry`` that builds a learner by name.

Every learner is a scikit-learn classifier (``parametrize_with_checks`` in tests/test_meta.py;
what cannot pass is declared there with its reason) and takes ``X`` of shape ``(n, R*C)`` (R
runs' raw logits, run-major). With ``n_classes=None`` the labels are any type and ``classes_``
the sorted distinct ones; with ``n_classes=C`` (as the meta-level CV passes it) the labels are
the indices ``[0, C)``, ``classes_`` is ``np.arange(C)`` and ``predict_proba`` returns C columns
even when a class is missing from the training rows (it then gets probability 0). Parameters
are checked by scikit-learn's constraints (``_parameter_constraints``) at ``fit`` and by
``make_learner``. After ``fit`` each exposes ``run_weights_`` (R,) (non-negative, sums to 1)
and ``summary_()`` (a JSON-ready dict). As StackingClassifier's final estimator they work on
multiclass tasks; on binary ones it passes one probability per model, which they refuse.

    >>> est = make_learner("lr", n_classes=18, params={"C": 0.5})
    >>> est.fit(X, y).predict_proba(X_test)
    >>> parse_params(["rf.n_estimators=300", "lr.C=0.5"])
    {'rf': {'n_estimators': 300}, 'lr': {'C': 0.5}}

Order of runs: ``vote`` and ``knn``/``svm`` (Euclidean geometry over all columns) do not depend on
it; ``lr`` does not either (the same solution up to a column permutation, equal to solver
tolerance). ``rf`` and ``xgboost`` draw features at random or break split ties by column index, so
permuting runs can change them slightly; the store sorts runs by name, so a given set of
runs always meets them in one order.
"""

from stackkit.meta.defaults import SIMPLICITY
from stackkit.meta.registry import make_learner, parse_params

__all__ = ["SIMPLICITY", "make_learner", "parse_params"]
