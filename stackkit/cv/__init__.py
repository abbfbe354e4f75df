"""Meta-level cross-validation: every score stackkit reports is computed here, on the stored folds.

``stacking`` fits each learner's folds in one pool and chooses; ``blend`` mixes candidates on the
other folds' predictions; ``result`` is one candidate's CV output; ``engine`` and ``cache`` say
where the fits run and which results are reused.
"""
