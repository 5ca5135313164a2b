import numpy as np
import pytest
import torch

torch.set_num_threads(2)


@pytest.fixture
def blobs():
    """Three well separated 3-D clusters of different shapes (float64)."""
    rng = np.random.default_rng(0)
    a = rng.normal(size=(150, 3)) @ np.array([[1.0, 0.3, 0.0], [0.0, 0.7, 0.2], [0.0, 0.0, 0.5]])
    b = rng.normal(size=(100, 3)) * 0.6 + np.array([5.0, 0.0, 1.0])
    c = rng.normal(size=(120, 3)) * np.array([0.3, 1.5, 0.8]) + np.array([0.0, 6.0, -2.0])
    return np.vstack([a, b, c])


@pytest.fixture(scope="module")
def single_thread():
    """Run a module's torch work on one thread.

    For suites of tiny problems thread start-up dominates the run time (badly
    so on a busy machine), and a fixed thread count keeps floating-point
    reductions identical between a test process and the subprocesses it
    compares against.
    """
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture
def two_threads():
    """torch on two threads for the test, restored after it."""
    old = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(old)
