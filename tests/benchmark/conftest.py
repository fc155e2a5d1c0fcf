from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Run the tiny models of these tests on one CPU thread (more threads only add synchronisation), then restore."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
