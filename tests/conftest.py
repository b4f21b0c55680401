"""Shared test fixtures."""

import os

import pytest
import torch

# On pytest-xdist workers (`python -m pytest -q -n 2 --dist loadfile`) each worker computes on
# one thread, and so do the processes it starts, so two workers fill two cores without
# oversubscribing them (two 2-thread jobs on 2 cores run many times slower, not twice).
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models: a second intra-op thread only adds synchronisation (10-100x slower when the
    2 cores are shared). Modules opt in with `pytestmark = pytest.mark.usefixtures("one_thread")`.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
