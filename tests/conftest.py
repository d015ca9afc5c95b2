"""Shared fixtures: dtype switching (x64 is a context, not a global) and keys."""

from __future__ import annotations

import jax
import pytest


@pytest.fixture
def x64():
    """Run the test body with 64-bit floats enabled."""
    with jax.enable_x64(True):
        yield


@pytest.fixture(params=["float32", "float64"])
def dtype(request):
    """Run the test in both precisions; the value is the dtype name."""
    with jax.enable_x64(request.param == "float64"):
        yield request.param


@pytest.fixture
def key():
    return jax.random.key(0)
