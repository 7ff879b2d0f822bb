"""Fixtures shared by the tests in tests/ (the session set-up is in the root conftest.py)."""

import pytest
import torch


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny tensors gain nothing from threads; on a busy 2-core machine they lose 10-30x to spinning."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
