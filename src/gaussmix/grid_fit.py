"""A grid of :class:`GaussianMixture` candidates fitted concurrently.

``select_model(..., starts="estimator")`` fits ``GaussianMixture(**params)``
for every (covariance type, K) of its grid.  :func:`fit_candidates` fits the
first attempt of every candidate of one type in one batched EM
(:func:`gaussmix.batched.fit_batched`): the data validated once, each
candidate initialised by the estimator's own code, the criteria's E-step of
all of them in one pass.  Each candidate equals its separate fit up to the
rounding of differently ordered sums; one the batch cannot finish is fitted
on its own.
"""

from __future__ import annotations

import math
import time
import warnings

import torch
from sklearn.exceptions import ConvergenceWarning

from .batched import batched_scores, fit_batched
from .distributed import Communicator
from .estimator import GaussianMixture
from ._validation import resolve_device
from .kmeans import _shared_partitions
from .threads import threads_for_input, torch_threads

__all__ = ["BatchedFit", "CPU_BATCH_MAX_SAMPLES", "batch_applies", "concurrent_applies",
           "fit_candidates"]


class BatchedFit:
    """Outcome of one candidate in :func:`fit_candidates`.

    Attributes
    ----------
    estimator : GaussianMixture or None
        The fitted estimator (None when the fit raised).
    error : str
        The fit's error message (empty on success).
    fit_time : float
        Seconds: the candidate's initialisation plus its share of the batch's
        EM time (the batch time split evenly), or its own time when it was
        fitted on its own.
    init_time : float
        Seconds spent drawing its initial parameters (0 when it was fitted
        on its own).
    batched : bool
        False when the candidate was fitted on its own (re-seed or failure).
    score : tuple of float or None
        Total log-likelihood and entropy of the responsibilities at the fitted
        parameters, computed with the other candidates of its type in one
        pass (float64 fits; None otherwise).
    """

    __slots__ = ("estimator", "error", "fit_time", "init_time", "batched", "score")

    def __init__(self, estimator, error, fit_time, init_time, batched, score=None):
        self.estimator, self.error, self.fit_time = estimator, error, fit_time
        self.init_time, self.batched, self.score = init_time, batched, score


def batch_applies(estimator_params: dict) -> bool:
    """Whether fits with these :class:`GaussianMixture` parameters can be batched.

    Verbose output, distributed fits and ``max_iter=0`` take the sequential
    path (they are about one fit's progress, ranks, or no EM at all), and so
    do fits with a ``prior`` (the batched engine has none).
    """
    p = GaussianMixture(**estimator_params).get_params()
    return (not p["verbose"] and p["distributed"] is not True and p["max_iter"] > 0
            and p["prior"] is None)  # the batched engine has no prior


# On the CPU a batch does the same arithmetic as the loop it replaces; its EM
# wins where the per-call overhead of many small kernels dominates (1.5-1.8x
# up to 10 000 samples, 0.85-1.08x at 20 000-50 000), and the grid besides
# shares k-means partitions, one validation and one criteria pass: measured
# end to end 1.22-1.63x at 20 000-50 000 samples (docs/PERFORMANCE.md).
CPU_BATCH_MAX_SAMPLES = 50_000


def concurrent_applies(X, device=None, **estimator_params) -> bool:
    """Whether ``concurrent="auto"`` batches the grid's fits.

    Batching applies when the estimator parameters allow it (no verbose
    output, not distributed, ``max_iter > 0``) and either the fits run on
    CUDA, or on the CPU the data have at most ``CPU_BATCH_MAX_SAMPLES``
    samples.

    Parameters
    ----------
    X : array-like or Tensor of shape (n_samples, n_features)
    device : str or torch.device, optional
    **estimator_params
        The :class:`GaussianMixture` parameters of the grid.

    Returns
    -------
    bool
    """
    if not batch_applies(estimator_params):
        return False
    dev = resolve_device(device, X if isinstance(X, torch.Tensor) else None)
    if dev.type == "cuda":
        return True
    n = X.shape[0] if hasattr(X, "shape") else len(X)
    return n <= CPU_BATCH_MAX_SAMPLES


class _Validated:
    """The grid's data validated once, as :meth:`GaussianMixture.fit` would for
    any of its candidates (they differ only in ``K`` and the covariance
    type): the tensor on the fit's device and dtype, and what validation
    records on an estimator (feature names, the input's kind)."""

    __slots__ = ("Xt", "n_features_in_", "feature_names_in_", "tensor_io")

    def __init__(self, X, device, estimator_params):
        probe = GaussianMixture(device=device, **estimator_params)
        self.Xt = probe._fit_validate(X, reset=True, min_samples=2)
        self.n_features_in_ = probe.n_features_in_
        self.feature_names_in_ = getattr(probe, "feature_names_in_", None)
        self.tensor_io = isinstance(X, torch.Tensor)

    def apply(self, est) -> None:
        """Record on ``est`` what validating the original input would have."""
        est._tensor_io = self.tensor_io
        est.n_features_in_ = self.n_features_in_
        if self.feature_names_in_ is not None:
            est.feature_names_in_ = self.feature_names_in_


def _prepare(X, k, cov_type, seed, n_init, device, estimator_params):
    """A fresh estimator with the fit's validated data and its ``n_init``
    initial parameters, drawn exactly as :meth:`GaussianMixture.fit` draws them.
    ``X`` may be a :class:`_Validated`: the data checked once for the grid."""
    est = GaussianMixture(n_components=k, covariance_type=cov_type, n_init=n_init,
                          random_state=seed, device=device, **estimator_params)
    est._check_hyperparameters()
    comm = Communicator.create(False)
    checked = X if isinstance(X, _Validated) else None
    data = est._fit_data(X if checked is None else checked.Xt, None, True, comm)
    est._device, est._dtype, est._tensor_io = data.device, data.dtype, data.tensor_io
    if checked is not None:
        checked.apply(est)
    est._online = None
    est._resumed_from_ = None
    user = est._check_initial_parameters(data.n_features, data.device, data.dtype)
    gen = est._make_generator(data.device)
    inits = []
    for _ in range(n_init):
        t0 = time.perf_counter()
        inits.append(est._initialize_root(data, gen, data.rows, user))
        est._init_time_ = time.perf_counter() - t0  # the last start's, as fit reports it
    return est, data.Xt, inits


def _finish(est, results) -> None:
    """The estimator's own choice among its restarts, and its fitted state."""
    best, best_lb = None, -math.inf
    for r in results:
        if best is None or r.lower_bound > best_lb:
            best, best_lb = r, r.lower_bound
    if not math.isfinite(best.lower_bound):
        raise ValueError(
            "EM produced a non-finite log-likelihood. Scale the input data or increase reg_covar."
        )
    if not best.converged:
        warnings.warn(
            f"Best performing initialization did not converge in {est.max_iter} "
            f"iterations. Try different init parameters, or increase max_iter, tol, "
            f"or check for degenerate data.",
            ConvergenceWarning,
        )
    est._set_result(best)


def fit_candidates(X, candidates, *, seed=None, n_init: int = 1, device=None,
                   fit_one=None, **estimator_params) -> list:
    """Fit a grid of candidates, batching those of one covariance type.

    Parameters
    ----------
    X : array-like or Tensor of shape (n_samples, n_features)
    candidates : list of (covariance_type, n_components)
    seed : int or None
        ``random_state`` of every candidate (as in a separate fit).
    n_init : int, default=1
        Restarts per candidate; all restarts of all candidates of one type
        form one batch.
    device : str or torch.device, optional
    fit_one : callable, optional
        ``fit_one(k, covariance_type) -> (estimator or None, error)``: the
        sequential fit used for candidates the batch cannot finish (default:
        ``GaussianMixture(...).fit`` with its ``ValueError`` caught).
    **estimator_params
        Further :class:`GaussianMixture` parameters.

    Returns
    -------
    list of BatchedFit
        In the order of ``candidates``.  A batched candidate that did not
        converge gives no :class:`~sklearn.exceptions.ConvergenceWarning`;
        its ``converged_`` is False.
    """
    if fit_one is None:
        def fit_one(k, cov_type):
            est = GaussianMixture(n_components=k, covariance_type=cov_type, n_init=n_init,
                                  random_state=seed, device=device, **estimator_params)
            try:
                return est.fit(X), ""
            except ValueError as exc:
                return None, str(exc)

    out: list = [None] * len(candidates)
    if estimator_params.get("prior") is not None:
        return _fit_each(candidates, fit_one)
    by_type: dict = {}
    for i, (cov_type, _) in enumerate(candidates):
        by_type.setdefault(cov_type, []).append(i)
    # Every type of one K starts from the same seed, so from one k-means partition.
    with torch_threads(threads_for_input(X, device)), _shared_partitions():
        try:
            # Validated once for every candidate (about 0.3 ms each on small data).
            data = _Validated(X, device, estimator_params)
        except ValueError:
            data = X  # each candidate's own fit reports the problem
        for cov_type, idx in by_type.items():
            _fit_type(data, candidates, cov_type, idx, out, seed, n_init, device, fit_one,
                      estimator_params)
    return out


def _fit_type(X, candidates, cov_type, idx, out, seed, n_init, device, fit_one, estimator_params):
    """:func:`fit_candidates` for the candidates ``idx`` of one covariance type
    (results into ``out``)."""
    prepared = {}
    for i in idx:
        t0 = time.perf_counter()
        try:
            est, Xt, inits = _prepare(X, candidates[i][1], cov_type, seed, n_init, device,
                                      estimator_params)
        except ValueError:
            prepared[i] = None  # its own fit reports the error
        else:
            prepared[i] = (est, Xt, inits, time.perf_counter() - t0)
    ready = [i for i in idx if prepared[i] is not None]
    flat = [p for i in ready for p in prepared[i][2]]
    t0 = time.perf_counter()
    results = []
    if ready:
        est0 = prepared[ready[0]][0]
        results = fit_batched(prepared[ready[0]][1], flat, reg_covar=est0.reg_covar,
                              tol=est0.tol, max_iter=est0.max_iter, batch_size=est0.batch_size,
                              tol_type=est0.tol_type)
    share = (time.perf_counter() - t0) / max(len(ready), 1)
    pos = 0
    for i in ready:
        est, _, inits, init_time = prepared[i]
        mine = results[pos:pos + len(inits)]
        pos += len(inits)
        if any(r is None for r in mine):
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                _finish(est, mine)
        except ValueError:
            continue
        out[i] = BatchedFit(est, "", init_time + share, init_time, True)
    # The criteria's E-step of every batched candidate, in one pass (float64:
    # equal to each candidate's own to rounding).
    scored = [i for i in ready if out[i] is not None]
    if scored and prepared[scored[0]][1].dtype == torch.float64:
        Xt = prepared[scored[0]][1]
        scores = batched_scores(Xt, [out[i].estimator._params for i in scored])
        for i, score in zip(scored, scores):
            out[i].score = score
    for i in idx:
        if out[i] is None:
            t0 = time.perf_counter()
            est, err = fit_one(candidates[i][1], cov_type)
            out[i] = BatchedFit(est, err, time.perf_counter() - t0, 0.0, False)


def _fit_each(candidates, fit_one) -> list:
    """:func:`fit_candidates` one candidate after the other (a fit the batched
    engine cannot run, e.g. with a conjugate prior)."""
    out = []
    for cov_type, k in candidates:
        t0 = time.perf_counter()
        est, err = fit_one(k, cov_type)
        out.append(BatchedFit(est, err, time.perf_counter() - t0, 0.0, False))
    return out

