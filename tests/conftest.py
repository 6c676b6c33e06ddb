"""Shared fixtures: a float64 RNG and the (cached) mnist5k dataset."""
import numpy as np
import pytest


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


@pytest.fixture(scope="session")
def mnist5k():
    from zskip.models.datasets import load_dataset
    return load_dataset("mnist5k")
