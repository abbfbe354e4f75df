"""Data in and out of the training set: image-folder layouts, the fold assignment, demo data.

``layouts`` reads the mask and manifest layouts, ``folds`` draws the person-grouped folds,
``demo`` draws the cartoon demo set, and ``synthetic`` makes runs of known quality for tests.
"""
