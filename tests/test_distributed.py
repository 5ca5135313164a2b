"""Distributed EM on a 2-process gloo group (CPU): equality with the single-process fit
on the concatenated data, coordinated initialisation, and errors on every rank."""

from __future__ import annotations

import json
import os
import socket
import time
from datetime import timedelta

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from gaussmix import BayesianGaussianMixture, GaussianMixture
from gaussmix.distributed import Communicator

COV_TYPES = ("full", "tied", "diag", "spherical")
# mclust's models whose M-steps couple components (closed form and iterative).
MCLUST_TYPES = ("EII", "VEI", "EEV", "VEV", "EVE", "VVE")
# Fits under mclust's conjugate prior (see _model).
PRIOR_CASES = ("EII+prior", "VEV+prior", "full+prior")
WORLD = 2
SPLIT = 700  # rank 0 gets rows [0, SPLIT), rank 1 the rest: uneven shards


def _data():
    rng = np.random.default_rng(7)
    X = np.concatenate([
        rng.normal(size=(600, 3)) @ np.array([[1.0, 0.3, 0.0], [0.0, 1.0, 0.2], [0.0, 0.0, 0.7]]),
        rng.normal(size=(500, 3)) * 0.6 + [4.0, 0.0, 1.0],
        rng.normal(size=(400, 3)) * 1.3 + [0.0, 5.0, -2.0],
    ])
    X = X[rng.permutation(len(X))]
    w = rng.uniform(0.2, 3.0, size=len(X))
    return X, w


def _init(cov_type, d=3):
    k = 3
    means = np.array([[0.5, 0.5, 0.0], [3.0, 0.5, 1.0], [0.5, 4.0, -1.0]])
    weights = np.array([0.3, 0.3, 0.4])
    shapes = {
        "full": np.stack([np.eye(d) * (1.0 + 0.1 * i) for i in range(k)]),
        "tied": np.eye(d) * 0.8,
        "diag": np.ones((k, d)) * 0.9,
        "spherical": np.array([1.0, 0.7, 1.2]),
    }
    # mclust's models take full precision matrices.
    return dict(weights_init=weights, means_init=means,
                precisions_init=shapes.get(cov_type, shapes["full"]))


def _bayes(cov_type, max_iter, **kw):
    # Priors given, so that a single process fitted on other data starts from
    # the same posterior (the default priors are the data's moments).
    d = 3
    cov_prior = {"full": np.eye(d), "tied": np.eye(d), "diag": np.ones(d), "spherical": 1.0}[cov_type]
    return BayesianGaussianMixture(
        n_components=4, covariance_type=cov_type, tol=1e-8, max_iter=max_iter, random_state=0,
        warm_start=True, mean_prior=np.zeros(d), covariance_prior=cov_prior, **kw,
    )


def _bayes_fit(cov_type, X_init, w_init, X, w, **kw):
    """Initial posterior from (X_init, w_init) as rank 0 would draw it, then the fit on (X, w)."""
    bgm = _bayes(cov_type, 0, **kw).fit(X_init, sample_weight=w_init)
    return bgm.set_params(max_iter=60).fit(X, sample_weight=w)


def _far_model(**kw):
    """Component 2 starts ~500 away from all data: it empties and must be re-seeded."""
    init = _init("full")
    init["means_init"] = init["means_init"].copy()
    init["means_init"][2] = [300.0, 300.0, 300.0]
    return GaussianMixture(3, tol=0, max_iter=4, **init, **kw)


def _model(cov_type, **kw):
    if cov_type.endswith("+prior"):  # mclust's conjugate prior, from the moments of all shards
        cov_type = cov_type[:-len("+prior")]
        kw["prior"] = "default"
    return GaussianMixture(3, covariance_type=cov_type, tol=1e-8, max_iter=40, **_init(cov_type), **kw)


class _FlakySource:
    """Re-iterable whose third pass yields a batch of the wrong width (on one rank)."""

    def __init__(self, X, bad):
        self.X, self.bad, self.passes = X, bad, 0

    def __iter__(self):
        self.passes += 1
        yield self.X[:50]
        if self.bad and self.passes >= 3:
            yield self.X[50:, :2]
        else:
            yield self.X[50:]


class _FailingPassSource:
    """Re-iterable whose pass number ``at`` raises before yielding anything."""

    def __init__(self, X, at=None):
        self.X, self.at, self.passes = X, at, 0

    def __iter__(self):
        self.passes += 1
        if self.passes == self.at:
            raise OSError("disk read failed")
        yield self.X[:300]
        yield self.X[300:]


def _error(fn):
    try:
        fn()
    except ValueError as exc:  # includes DistributedError
        return f"{type(exc).__name__}: {exc}"
    return None


def _worker(rank, world, port, outdir):
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world, timeout=timedelta(seconds=60))
    X, w = _data()
    sl = slice(0, SPLIT) if rank == 0 else slice(SPLIT, None)
    Xs, ws = X[sl], w[sl]
    out, errors = {}, {}
    for ct in COV_TYPES + MCLUST_TYPES + PRIOR_CASES:
        gm = _model(ct, distributed=True).fit(Xs, sample_weight=ws)
        out[f"{ct}_means"], out[f"{ct}_weights"] = gm.means_, gm.weights_
        out[f"{ct}_cov"], out[f"{ct}_lb"] = gm.covariances_, np.array(gm.lower_bound_)
        out[f"{ct}_niter"] = np.array(gm.n_iter_)
    for ct in COV_TYPES:
        bgm = _bayes_fit(ct, Xs, ws, Xs, ws, distributed=True)
        out[f"bayes_{ct}_means"], out[f"bayes_{ct}_weights"] = bgm.means_, bgm.weights_
        out[f"bayes_{ct}_cov"], out[f"bayes_{ct}_lb"] = bgm.covariances_, np.array(bgm.lower_bound_)
        out[f"bayes_{ct}_niter"] = np.array(bgm.n_iter_)
    bgm = BayesianGaussianMixture(n_components=3, max_iter=0, distributed=True).fit(Xs, sample_weight=ws)
    out["bayes_mean_prior"], out["bayes_cov_prior"] = bgm.mean_prior_, bgm.covariance_prior_
    # An emptied component is re-seeded on the same worst-explained point on every rank.
    gm = _far_model(distributed=True).fit(Xs)
    out["reseed_means"], out["reseed_n"] = gm.means_, np.array(gm.n_reseeds_)
    # Coordinated default initialisation (k-means on rank 0, broadcast).
    gm = GaussianMixture(3, random_state=rank, max_iter=3, distributed=True).fit(Xs)
    out["kmeans_means"] = gm.means_
    # Out-of-core shard: a list of batches on each rank.
    gm = _model("full", distributed=True).fit([(Xs[:300], ws[:300]), (Xs[300:], ws[300:])])
    out["source_means"], out["source_cov"] = gm.means_, gm.covariances_
    # Checkpointed distributed fit, then a resumed (already finished) one.
    ck = os.path.join(outdir, "dist_ckpt.npz")
    a = _model("diag", distributed=True).fit(Xs, checkpoint=ck, checkpoint_every=2)
    b = _model("diag", distributed=True).fit(Xs, checkpoint=ck, checkpoint_every=2)
    out["ckpt_a"], out["ckpt_b"] = a.means_, b.means_
    out["ckpt_resumed"] = np.array(b._resumed_from_ is not None)

    errors["features"] = _error(lambda: _model("full", distributed=True).fit(Xs if rank == 0 else Xs[:, :2]))
    errors["empty"] = _error(lambda: _model("full", distributed=True).fit(Xs if rank == 0 else Xs[:0]))
    errors["width_first_pass"] = _error(
        lambda: _model("full", distributed=True).fit([Xs[:50], Xs[50:] if rank == 0 else Xs[50:, :2]])
    )
    errors["width_later_pass"] = _error(
        lambda: _model("full", distributed=True).fit(_FlakySource(Xs, bad=rank == 1))
    )
    # Pass 4 of _far_model on a source is the re-seed pass (worst-explained samples).
    errors["reseed_pass"] = _error(
        lambda: _far_model(distributed=True).fit(_FailingPassSource(Xs, at=4 if rank == 1 else None))
    )
    errors["checkpoint_config"] = _error(
        lambda: _model("full", distributed=True).fit(Xs, checkpoint=ck)
    )
    errors["parameters"] = _error(
        lambda: _model("full", distributed=True, reg_covar=1e-6 if rank == 0 else -1.0).fit(Xs)
    )
    # The group is still usable after the failures: one more fit works.
    gm = _model("spherical", distributed=True).fit(Xs, sample_weight=ws)
    out["after_errors_means"] = gm.means_
    np.savez(os.path.join(outdir, f"rank{rank}.npz"), **out)
    with open(os.path.join(outdir, f"rank{rank}.json"), "w") as fh:
        json.dump(errors, fh)
    dist.destroy_process_group()


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _spawn(worker, outdir, *args, limit=150):
    """Run ``worker(rank, WORLD, port, outdir, *args)`` on WORLD processes; fail on a hang."""
    ctx = mp.start_processes(worker, args=(WORLD, _free_port(), outdir, *args), nprocs=WORLD,
                             join=False, start_method="spawn")
    deadline = time.monotonic() + limit
    while not ctx.join(timeout=1):
        if time.monotonic() > deadline:
            for p in ctx.processes:
                p.kill()
            pytest.fail(f"the 2-process gloo run did not finish within {limit} s (a hang)")


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    outdir = str(tmp_path_factory.mktemp("dist"))
    _spawn(_worker, outdir)
    arrays = [dict(np.load(os.path.join(outdir, f"rank{r}.npz"))) for r in range(WORLD)]
    errors = [json.load(open(os.path.join(outdir, f"rank{r}.json"))) for r in range(WORLD)]
    return arrays, errors


def _close(a, b, rtol=1e-10):
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    np.testing.assert_allclose(a, b, rtol=rtol, atol=rtol * max(1.0, np.abs(b).max()))


@pytest.mark.parametrize("cov_type", COV_TYPES + MCLUST_TYPES + PRIOR_CASES)
def test_two_ranks_equal_single_process_fit(ranks, cov_type):
    arrays, _ = ranks
    X, w = _data()
    ref = _model(cov_type).fit(X, sample_weight=w)
    assert ref.n_iter_ > 2  # a real EM run, not the initial parameters
    for r in range(WORLD):
        _close(arrays[r][f"{cov_type}_means"], ref.means_)
        _close(arrays[r][f"{cov_type}_weights"], ref.weights_)
        _close(arrays[r][f"{cov_type}_cov"], ref.covariances_)
        _close(arrays[r][f"{cov_type}_lb"], ref.lower_bound_)
        assert int(arrays[r][f"{cov_type}_niter"]) == ref.n_iter_
    # Every rank holds bit-identical parameters.
    np.testing.assert_array_equal(arrays[0][f"{cov_type}_means"], arrays[1][f"{cov_type}_means"])


@pytest.mark.parametrize("cov_type", COV_TYPES)
def test_bayesian_two_ranks_equal_single_process_fit(ranks, cov_type):
    arrays, _ = ranks
    X, w = _data()
    # Rank 0 initialises from its own shard; the single process starts there too.
    ref = _bayes_fit(cov_type, X[:SPLIT], w[:SPLIT], X, w)
    assert ref.n_iter_ > 2
    for r in range(WORLD):
        for name, attr in (("means", "means_"), ("weights", "weights_"), ("cov", "covariances_"),
                           ("lb", "lower_bound_")):
            _close(arrays[r][f"bayes_{cov_type}_{name}"], getattr(ref, attr))
        assert int(arrays[r][f"bayes_{cov_type}_niter"]) == ref.n_iter_


def test_bayesian_default_priors_are_the_moments_of_all_shards(ranks):
    arrays, _ = ranks
    X, w = _data()
    mean = w @ X / w.sum()
    cov = (w[:, None] * (X - mean)).T @ (X - mean) / (w.sum() - 1.0)
    for r in range(WORLD):
        _close(arrays[r]["bayes_mean_prior"], mean)
        _close(arrays[r]["bayes_cov_prior"], cov)


def test_sources_and_checkpoints_on_ranks(ranks):
    arrays, _ = ranks
    X, w = _data()
    ref = _model("full").fit(X, sample_weight=w)
    for r in range(WORLD):
        _close(arrays[r]["source_means"], ref.means_)
        _close(arrays[r]["source_cov"], ref.covariances_)
        np.testing.assert_array_equal(arrays[r]["ckpt_a"], arrays[r]["ckpt_b"])
        assert bool(arrays[r]["ckpt_resumed"])
        _close(arrays[r]["after_errors_means"], _model("spherical").fit(X, sample_weight=w).means_)


@pytest.mark.filterwarnings("ignore::gaussmix.EmptyComponentWarning")
@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")  # tol=0: runs max_iter on purpose
def test_reseed_across_ranks_equals_single_process(ranks):
    arrays, _ = ranks
    X, _ = _data()
    ref = _far_model().fit(X)
    assert ref.n_reseeds_ >= 1
    for r in range(WORLD):
        assert int(arrays[r]["reseed_n"]) == ref.n_reseeds_
        _close(arrays[r]["reseed_means"], ref.means_)


def test_initialisation_is_coordinated(ranks):
    arrays, _ = ranks
    # The ranks were given different random_state values; rank 0's initialisation wins.
    np.testing.assert_array_equal(arrays[0]["kmeans_means"], arrays[1]["kmeans_means"])


@pytest.mark.parametrize(
    "case, words",
    [
        ("features", "different numbers of features"),
        ("empty", "shard of rank(s) [1] is empty"),
        ("width_first_pass", "columns"),
        ("parameters", "reg_covar"),
        ("width_later_pass", "columns"),
        ("checkpoint_config", "another configuration"),
        ("reseed_pass", "OSError: disk read failed"),
    ],
)
def test_bad_input_fails_on_every_rank(ranks, case, words):
    _, errors = ranks
    for r in range(WORLD):
        msg = errors[r][case]
        assert msg is not None, f"rank {r} did not raise for {case}"
        assert words in msg, msg


def test_distributed_needs_a_process_group():
    assert not dist.is_initialized()
    with pytest.raises(ValueError, match="init_process_group"):
        GaussianMixture(2, distributed=True).fit(np.random.default_rng(0).normal(size=(20, 2)))


def test_single_process_communicator_is_a_no_op():
    comm = Communicator(False)
    assert comm.rank == 0 and comm.world_size == 1
    assert comm.run(lambda: 5, "x") == 5
    np.testing.assert_array_equal(comm.gather([1.0, 2.0]), [[1.0, 2.0]])


def _lone_worker(rank, world, port, outdir, lone):
    """Rank ``lone`` fits with distributed=False; the other rank with True."""
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    torch.set_num_threads(1)
    # A short group timeout: the waiting rank gives up after it.
    dist.init_process_group("gloo", rank=rank, world_size=world, timeout=timedelta(seconds=5))
    X, _ = _data()
    Xs = X[:SPLIT] if rank == 0 else X[SPLIT:]
    error = _error(lambda: _model("full", distributed=rank != lone).fit(Xs))
    with open(os.path.join(outdir, f"lone{rank}.json"), "w") as fh:
        json.dump(error, fh)
    dist.destroy_process_group()


@pytest.mark.parametrize("lone", [0, 1])
def test_a_rank_fitting_alone_is_reported_on_the_others(tmp_path, lone):
    _spawn(_lone_worker, str(tmp_path), lone, limit=60)
    errors = [json.load(open(tmp_path / f"lone{r}.json")) for r in range(WORLD)]
    assert errors[lone] is None  # it fitted its own shard
    waiting = errors[1 - lone]
    assert waiting is not None and waiting.startswith("DistributedError"), waiting
    assert "not every rank entered the distributed fit" in waiting
    assert "a rank that passes distributed=False" in waiting
