"""Fixtures shared by the tests in tests/ (the session set-up is in the root conftest.py)."""

import pytest
import torch
from tiny import tiny_config, token_loaders


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny tensors gain nothing from threads; on a busy 2-core machine they lose 10-30x to spinning."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture
def tiny_cfg():
    """A fresh copy of tests/tiny.py's TINY config (vocab 100, context 16, 2 layers of width 32)."""
    return tiny_config()


@pytest.fixture
def tiny_loaders():
    """(train, val) loaders of random token windows for tiny_cfg (tests/tiny.py token_loaders())."""
    return token_loaders()
