"""Shared tiny fixtures. Each test module mirrors one library module."""

from __future__ import annotations

import numpy as np
import pytest

from stackkit.contract.store import Store
from stackkit.data.synthetic import make_case


@pytest.fixture(scope="session")
def small_case():
    """120 people x 7 images, 3 runs, 5 folds, 140 test samples (built once per session)."""
    return make_case(n_groups=120, n_test=140, n_runs=3, seed=1)


@pytest.fixture
def store(tmp_path, small_case):
    """An artifacts folder holding ``small_case`` (folds and three runs)."""
    s = Store(tmp_path / "artifacts")
    small_case.write(s)
    return s


@pytest.fixture
def rng():
    return np.random.default_rng(0)
