"""Every meta learner default in one place, each with the measurement behind it.

``SIMPLICITY`` orders the learners simplest first (ties in CV macro-F1 go to the simpler);
``RELATIVE_COST`` orders the shared pool's fits, costliest first.
"""

from __future__ import annotations

SIMPLICITY = ("vote", "caruana", "lr", "knn", "svm", "rf", "xgboost")

# --------------------------------------------------------------------------------------------
# DEFAULTS, all in one place. Sized for ~20k rows x up to 30 runs x 18 classes on 2 cores;
# the target is `stackkit fit --meta auto` (7 learners x 5 folds + refit) in about a minute.
# Measured with bench/learners.py on make_case(2700, 12600, 10): 5-fold macro-F1 on the whole
# OOF vector, against each learner's scikit-learn-defaults counterpart on the concatenated
# probabilities ("naive"). Seconds are fit + predict per fold on a shared 2-core machine that
# others were loading (load ~5): read them as ratios to the naive ones.
N_JOBS = 1  # the caller (stacking.run_tasks) parallelises over folds; don't oversubscribe
SEED = 0  # every random learner is reproducible
# Rough cost of one fit per training row, relative to lr, on the reference case: the shared pool
# (stacking.run_tasks) starts the costliest fits first. Only the order matters.
RELATIVE_COST = {"vote": 0.01, "caruana": 0.5, "lr": 1.0, "svm": 1.2, "knn": 1.5, "rf": 5.0,
                 "xgboost": 4.0}  # fmt: skip

# Learners whose cost grows faster than linearly in rows x runs, and the training rows above
# which `--meta auto` leaves them out (logged; naming one in --meta still fits it). knn predicts
# each row by its distances to every training row: rows squared (bench/scaling.py,
# docs/BENCHMARKS.md). Every other default learner grows at most linearly in rows x runs.
AUTO_MAX_ROWS = {"knn": 50_000}

# lr (0.867, 1.4 s; naive 0.860): log-probabilities beat probabilities (log loss 0.27 vs 0.35);
# standardised so lbfgs converges in ~30 iterations; C=0.1 beats 1.0 and 0.01; "balanced"
# weights cost 0.02 macro-F1 here; the per-class mean over runs loses 0.13. No temperature: the
# linear model learns each column's scale itself (with it: -0.002).
# Per-factor marginals (factors="mask", bench/factors.py): bench 0.866 (-0.001),
# demo 0.316 (+0.000). Off: not better on both.
LR = dict(features="logprob", temperature=False, combine="concat", C=0.1, standardize=True,
          class_weight=None, max_iter=100, tol=1e-3, factors="none")  # fmt: skip
# knn (0.820, 1.0 s; naive 0.803): all runs' columns (the per-class mean over runs loses 0.06:
# runs differ in quality); temperature-scaled probabilities (+0.03 over raw ones on the mean;
# log-probabilities lose 0.1); distance weights; k=25 and 50 within 0.002.
# Per-factor marginals (factors="mask", bench/factors.py): bench 0.818 (-0.002),
# demo 0.307 (+0.006). Off: not better on both.
KNN = dict(features="proba", temperature=True, combine="concat", n_neighbors=25,
           weights="distance", factors="none")  # fmt: skip
# svm (0.876, 1.3 s; naive SVC 0.842, 143 s): a linear SVM (squared hinge, one-vs-rest) on
# standardised, temperature-scaled log-probabilities, solved by L-BFGS (liblinear's LinearSVC:
# 0.860 in 7 s). C=0.01 beats 0.1 (0.874 on fold 0). An RBF part is optional (n_components > 0,
# Nystroem): it added nothing here (+0.0001) for +50% time, so it is off by default.
# Per-factor marginals (factors="mask", bench/factors.py): bench 0.867 (-0.009),
# demo 0.295 (+0.008). Off: not better on both.
SVM = dict(features="logprob", temperature=True, combine="concat", C=0.01, gamma=None,
           n_components=0, class_weight=None, max_iter=200, tol=1e-4, factors="none")  # fmt: skip
# rf (naive RandomForestClassifier() 0.820, 143 s): by default extremely randomized trees
# (Geurts et al. 2006: split thresholds drawn at random, every tree on all training rows), not
# Breiman's best-split trees on bootstraps: measured in one session, 5 folds in 2 processes,
# ExtraTrees 60 trees 0.829 in 13 s against RandomForest (60 trees on half-size bootstraps)
# 0.827 in 62 s; ExtraTrees on half-size bootstraps 0.824 in 6 s; 40 trees 0.822, 100 trees
# 0.832 (+70% time). `--param rf.splitter=best --param rf.max_samples=0.5` gives the classic
# forest. Trees split on thresholds, so temperatures do not matter for best splits, but random
# thresholds are drawn uniformly over a feature's range: probabilities beat log-probabilities
# (0.829 vs 0.797). The per-run columns matter (the pooled mean beside them: 0.811). Balanced
# class weights lift macro-F1 (0.818 -> 0.829); leaves of >= 2 rows lose 0.01.
# Per-factor marginals (factors="mask", bench/factors.py): bench 0.823 (-0.006),
# demo 0.288 (+0.019). Off: not better on both.
RF = dict(features="proba", temperature=False, combine="concat", splitter="random",
          n_estimators=60, max_samples=None, min_samples_leaf=1, max_features="sqrt",
          class_weight="balanced_subsample", factors="none")  # fmt: skip
# xgboost (0.875 in 10 rounds from lr's halved log-probabilities; naive 0.858, 178 s): hist trees,
# shallow, with shrinkage; no early stopping (no inner split). Cost is rounds x 18 trees. The
# temperature-scaled pooled mean next to the per-run columns helps (the mean alone loses 0.1).
# Measured from zero (before base="lr", below; 5-fold macro-F1): 100
# rounds x lr 0.15, half the columns per tree 0.859; 80 x 0.25 x 30% columns 0.858 (-10% time);
# 60 x 0.25 x 30% 0.856 (-40%); balanced sample weights lose 0.006. Histogram bins (5 folds in
# 2 processes, quiet machine): 64 bins 0.8591 in 51 s; 32 bins 0.8656 in 42 s (coarser splits
# regularise); 16 bins 0.8577 in 39 s. Rounds (same conditions, 5 folds): 100 x lr 0.15 x 50%
# columns 0.8656 in 42 s; 70 x 0.2 x 70% columns 0.8648 in 28 s; 60 x 0.2 x 70% 0.8631 (the
# default: auto's whole fit must stay near a minute, and xgboost is half of its work);
# 70 x 0.2 x 50% 0.8603; 60 x 0.25 x 70% 0.8615; 50 x 0.25 0.8585; 80 x 0.2 x 24 bins 0.852;
# depth 4 x 60 rounds 0.8571. The cost is histogram building, rows x all columns per tree (18
# trees a round): sampling columns or rows per tree saves nothing, and fewer columns lose
# (per-class mean/max/min/std over runs, 72 columns: 0.786; 64 SVD components + mean: 0.786).
# Per-factor marginals (factors="mask", bench/factors.py): bench 0.855 (-0.009),
# demo 0.307 (-0.001). Off: not better on both.
# Boosting from a base (base="lr", 2026-12-02): the trees start from the logistic regression's
# log-probabilities (fitted first on the same rows; xgboost's base_margin) times base_scale,
# instead of from zero, so they learn only what the linear model misses. xgboost's 5-fold CV
# macro-F1, mean over draws: make_case seeds 0/1/2 (the reference case) | bench/quality.py's
# digits and digits-dominant (10 draws, ~1,800 rows, lr weak there) | its synthetic (5 draws);
# CPU relative to 60 rounds from zero:
#   from zero, 60 rounds x lr 0.2:              0.8608 | 0.9117 | 0.8092   1.00
#   from lr x 1.0, 10 x 0.3:                    0.8760 | 0.9036 | 0.8075   0.30
#   from lr x 0.7, 10 x 0.3:                    0.8787 | 0.9082 | 0.8128   0.30
#   from lr x 0.5, 10 x 0.3 (the default):      0.8744 | 0.9116 | 0.8140   0.30
#   from lr x 0.5, 20 x 0.3:                    -      | 0.9107 | -        0.45
#   from lr x 1.0 with lr's margins cross-fitted on the other folds (digits): 0.9068
#   from the runs' pooled mean (free; vote is weak): reference 60 rounds 0.8689, 30 0.8609
# At full scale the regression's in-sample confidence leaves the trees too little to learn on
# small cases (digits: 1,100 training rows); halved, the default is at or above boosting from
# zero on all three. Rounds from lr x 1.0 on the reference case: 10 0.8733, 20 0.8715, 30 0.8694.
XGB = dict(features="logprob", temperature=True, combine="both", n_estimators=10, max_depth=3,
           learning_rate=0.3, subsample=0.8, colsample_bytree=0.7, min_child_weight=2.0,
           reg_lambda=1.0, max_bin=32, device="auto", class_weight=None, base="lr",
           base_scale=0.5, factors="none")  # fmt: skip
# Every learner's defaults by name: part of each CV-cache key (stackkit.cv.cache.entry_key), so a
# result computed under other defaults (xgboost before it boosted from lr, say) is never reused
LEARNER_DEFAULTS = {"lr": LR, "knn": KNN, "svm": SVM, "rf": RF, "xgboost": XGB}
# The learners taking ``factors`` and their defaults (registry.resolve_factors reads this, so it
# need not import the learners)
FACTORS_DEFAULT = {name: p["factors"] for name, p in
                   (("lr", LR), ("knn", KNN), ("svm", SVM), ("rf", RF), ("xgboost", XGB))}  # fmt: skip
# device "auto": xgboost trains on CUDA when a GPU is present (trees.cuda_available), else on the
# CPU; the same hist algorithm, results equal within tolerance (tests/test_meta.py, gpu mark)
