"""How many torch threads fits and inference calls run on (gaussmix.threads)."""

import numpy as np
import torch

import gaussmix.fitting as fitting_mod
import gaussmix.threads as threads_mod
from gaussmix import GaussianMixture
from gaussmix.threads import threads_for, threads_for_input, torch_threads


def test_rule(two_threads):
    assert threads_for(10_000, "cpu") == 1
    assert threads_for(10_001, "cpu") == 2
    assert threads_for(None, None) == 2  # a source: size unknown
    assert threads_for(100, "meta") == 2  # not the CPU
    assert threads_for(100, "no-such-device") == 2  # the fit reports it
    assert threads_for_input(np.zeros((50, 2)), None) == 1
    assert threads_for_input([[0.0, 1.0]], None) == 2  # no shape


def test_context_restores_and_never_raises_the_count(two_threads):
    with torch_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == 2
    with torch_threads(4):
        assert torch.get_num_threads() == 2


def test_small_fits_run_on_one_thread(two_threads, monkeypatch):
    seen = []
    run_em = fitting_mod.run_em

    def spy(*args, **kwargs):
        seen.append(torch.get_num_threads())
        return run_em(*args, **kwargs)

    monkeypatch.setattr(fitting_mod, "run_em", spy)
    X = np.random.default_rng(0).normal(size=(300, 2))
    small = GaussianMixture(2, random_state=0).fit(X)
    assert seen and set(seen) == {1}
    assert torch.get_num_threads() == 2
    seen.clear()
    monkeypatch.setattr(threads_mod, "SINGLE_THREAD_MAX_SAMPLES", 100)
    large = GaussianMixture(2, random_state=0).fit(X)
    assert seen and set(seen) == {2}
    # The thread count changes the speed, not the result.
    np.testing.assert_allclose(large.means_, small.means_, rtol=1e-12, atol=1e-12)
