"""Shared fixtures. Plain functions that tests import live in helpers.py; helpers used by one
test file belong in that file."""
# explorer first: it sets the thread pools' wait policy, which only counts before NumPy and
# torch load their OpenMP/BLAS libraries. Imported after torch, every kernel call and torch
# op here ran ~20-40x slower (threads of one pool spinning while the other computes).
import explorer  # noqa: F401  (isort: skip)

import pytest
from helpers import randomize_params


@pytest.fixture
def random_gpt():
    """Factory: random_gpt(seed=0, **GPTConfig fields) -> explorer GPT with randomized params."""
    from explorer import GPT, GPTConfig

    def make(seed=0, **config):
        return randomize_params(GPT(GPTConfig(**config)), seed)
    return make
