"""The scikit-learn-compatible estimator: a thin shell over the functional core."""

from __future__ import annotations

import hashlib
import json
import math
import numbers
import os
import time
import warnings
import zlib
from types import SimpleNamespace

import numpy as np
import torch
from sklearn.base import BaseEstimator, DensityMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted, validate_data

from ._validation import (
    as_tensor_2d,
    check_array_like,
    check_sample_weight,
    resolve_device,
    resolve_dtype,
    to_output,
)
from .checkpoint import FitCheckpoint
from .covariance import get_covariance_type
from .data import RESERVOIR_SIZE, as_source, chunk_rows, is_source, iter_chunks, reservoir_sample
from .distributed import Communicator
from .em import EMResult, e_step, run_em
from .stopping import TOL_TYPES
from .online import online_step
from .guard import warn_if_reg_covar_dominates
from .init import INIT_METHODS, initial_params
from .params import GMMParams

__all__ = ["GaussianMixture"]


def _with_remedy(message: str, min_samples: int) -> str:
    """scikit-learn's input-validation message, completed with what to do."""
    if "features, but" in message:
        return message + " Pass data with the same columns as at fit time."
    if "Found array with dim" in message:
        return message + " Pass a 2D array of shape (n_samples, n_features)."
    if "sample(s)" in message:
        return message + f" Provide at least {min_samples} samples."
    if "feature(s)" in message:
        return message + " Provide at least one feature column."
    if "convert" in message or "dtype" in message:
        return (f"X must be numeric: {message}. Convert or drop the non-numeric columns "
                f"(e.g. pandas.get_dummies or DataFrame.select_dtypes).")
    if "Complex data" in message:
        return message + " Pass real values."
    return message


class GaussianMixture(DensityMixin, BaseEstimator):
    """Gaussian mixture model fitted by expectation-maximisation, on PyTorch.

    A drop-in replacement for :class:`sklearn.mixture.GaussianMixture` that
    also takes torch tensors on any device, supports sample weights, and
    processes the data in bounded-memory chunks.

    Parameters
    ----------
    n_components : int, default=1
        Number of mixture components.
    covariance_type : {"full", "tied", "diag", "spherical"}, default="full"
        Structure of the component covariances.
    tol : float, default=1e-3
        Convergence threshold, applied as ``tol_type`` says.
    reg_covar : float, default=1e-6
        Non-negative amount added to the diagonal of every covariance, in the
        squared units of the data (scale the data if its variance is tiny).
    max_iter : int, default=100
        Number of EM iterations per initialisation.  ``0`` (as in
        scikit-learn) keeps the initial parameters, with ``lower_bound_ = -inf``
        (no E-step was run) and ``converged_ = False``.
    n_init : int, default=1
        Number of initialisations; the one with the highest final lower
        bound is kept.
    init_params : {"kmeans", "k-means++", "random", "random_from_data", "hc"}, default="kmeans"
        How the initial responsibilities are found.  ``"hc"`` cuts the
        model-based agglomerative hierarchical clustering of the data (R
        mclust's default start; :mod:`gaussmix.hc`) at ``n_components``
        clusters; it runs on at most ``hc_subset`` rows (drawn at random from
        larger data) and is deterministic otherwise.
    weights_init, means_init, precisions_init : array-like or Tensor, optional
        User-supplied initial parameters (shapes as in scikit-learn).
    random_state : int, RandomState instance or None, default=None
        Seed of the initialisation (and of :meth:`sample`).
    warm_start : bool, default=False
        Continue from the last fit's parameters on the next ``fit``.
    verbose : int, default=0
        Print progress when positive.
    verbose_interval : int, default=10
        Iterations between progress lines.
    device : str or torch.device, optional
        Where to compute: ``"cpu"``, ``"cuda"``, ``"cuda:1"``...  Default:
        the device of the input tensor, else the CPU.
    dtype : {"float32", "float64"} or torch dtype, optional
        Precision of the computation.  Default: follows the input (float32
        stays float32, anything else becomes float64).  Sufficient statistics
        are always accumulated in float64.
    batch_size : int, optional
        Rows per chunk; default sizes chunks from the problem (and, on CUDA,
        from free memory).  Chunking changes only the order of float64
        summation, not the result.
    distributed : bool, default=False
        Fit across the ranks of an initialised ``torch.distributed`` process
        group: every rank passes its own shard to :meth:`fit`, statistics are
        summed with one all-reduce per EM iteration, rank 0 initialises and
        broadcasts the initial parameters, and every rank ends with the same
        parameters.  :meth:`predict`, :meth:`score_samples` etc. stay local.
    learning_decay : float, default=0.6
        Exponent ``alpha`` in (0.5, 1] of the step size of :meth:`partial_fit`,
        ``eta_t = (learning_offset + t) ** (-alpha)``.
    learning_offset : float, default=2.0
        Non-negative offset ``t0`` of that step size; larger values damp the
        first updates.
    tol_type : {"absolute", "relative"}, default="absolute"
        ``"absolute"`` (scikit-learn's rule) stops when the mean log-likelihood
        per sample changes by less than ``tol``; ``"relative"`` (R mclust's
        rule, with ``tol=1e-5`` there) stops when the total log-likelihood
        changes by less than ``tol`` times ``1 + |total|``.  The relative rule
        with ``tol=1e-5`` runs EM closer to the optimum; see
        :func:`gaussmix.stopping.has_converged`.
    hc_subset : int, default=2000
        With ``init_params="hc"``, the hierarchical clustering runs on a random
        subset of this many rows when the data have more (mclust's default);
        its cost is quadratic in the subset size.

    Attributes
    ----------
    weights_ : ndarray or Tensor (K,)
    means_ : ndarray or Tensor (K, D)
    covariances_ : ndarray or Tensor
    precisions_ : ndarray or Tensor
    precisions_cholesky_ : ndarray or Tensor
        Fitted parameters, as numpy arrays when fitted on non-tensor input,
        as tensors on the compute device otherwise.
    converged_ : bool
    n_iter_ : int
    lower_bound_ : float
        Mean log-likelihood per sample at the last E-step of the best run.
    lower_bounds_ : list of float
        Its history over iterations.
    fit_events_ : list of dict
        Numerical interventions during the best run's EM iterations (see
        ``docs/RELIABILITY.md``): ``"reseed"`` of an emptied component,
        ``"regularization"`` of a covariance that needed more than
        ``reg_covar``.  Empty for a well-posed fit.
    n_reseeds_ : int
        Number of component re-seeds in the best run.
    n_features_in_ : int
    feature_names_in_ : ndarray of str
        Set when fitted on a DataFrame with string column names.

    Examples
    --------
    >>> import numpy as np
    >>> from gaussmix import GaussianMixture
    >>> X = np.r_[np.random.randn(100, 2), np.random.randn(100, 2) + 5]
    >>> gm = GaussianMixture(n_components=2, random_state=0).fit(X)
    >>> gm.predict(X).shape
    (200,)
    """

    def __init__(
        self,
        n_components=1,
        *,
        covariance_type="full",
        tol=1e-3,
        reg_covar=1e-6,
        max_iter=100,
        n_init=1,
        init_params="kmeans",
        weights_init=None,
        means_init=None,
        precisions_init=None,
        random_state=None,
        warm_start=False,
        verbose=0,
        verbose_interval=10,
        device=None,
        dtype=None,
        batch_size=None,
        distributed=False,
        learning_decay=0.6,
        learning_offset=2.0,
        tol_type="absolute",
        hc_subset=2000,
    ):
        self.n_components = n_components
        self.covariance_type = covariance_type
        self.tol = tol
        self.reg_covar = reg_covar
        self.max_iter = max_iter
        self.n_init = n_init
        self.init_params = init_params
        self.weights_init = weights_init
        self.means_init = means_init
        self.precisions_init = precisions_init
        self.random_state = random_state
        self.warm_start = warm_start
        self.verbose = verbose
        self.verbose_interval = verbose_interval
        self.device = device
        self.dtype = dtype
        self.batch_size = batch_size
        self.distributed = distributed
        self.learning_decay = learning_decay
        self.learning_offset = learning_offset
        self.tol_type = tol_type
        self.hc_subset = hc_subset

    # ------------------------------------------------------------------ checks
    def _check_hyperparameters(self):
        """Raise a ValueError naming the parameter and its valid values."""

        def integer(name, low):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < low:
                raise ValueError(
                    f"Invalid value for '{name}': {v!r}. It must be an integer >= {low}."
                )

        def real(name):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, numbers.Real) or not (v >= 0) or not math.isfinite(v):
                raise ValueError(
                    f"Invalid value for '{name}': {v!r}. It must be a finite number >= 0."
                )

        integer("n_components", 1)
        integer("max_iter", 0)
        integer("n_init", 1)
        if not isinstance(self.verbose, (bool, np.bool_)):  # scikit-learn accepts True
            integer("verbose", 0)
        integer("verbose_interval", 1)
        real("tol")
        real("reg_covar")
        integer("hc_subset", 2)
        if self.tol_type not in TOL_TYPES:
            raise ValueError(
                f"Invalid value for 'tol_type': {self.tol_type!r}. Use 'absolute' (scikit-learn's "
                f"change of the mean log-likelihood per sample) or 'relative' (mclust's relative "
                f"change of the total log-likelihood)."
            )
        get_covariance_type(self.covariance_type)
        if self.init_params not in INIT_METHODS:
            raise ValueError(
                f"Invalid init_params {self.init_params!r}: choose one of {list(INIT_METHODS)}."
            )
        if not isinstance(self.warm_start, (bool, np.bool_)):
            raise ValueError(
                f"Invalid value for 'warm_start': {self.warm_start!r}. Use True or False."
            )
        rs = self.random_state
        if not (rs is None or isinstance(rs, np.random.RandomState) or (
            isinstance(rs, numbers.Integral) and not isinstance(rs, bool) and 0 <= rs < 2**32
        )):
            raise ValueError(
                f"Invalid value for 'random_state': {rs!r}. Use None, an integer in "
                f"[0, 2**32 - 1] or a numpy.random.RandomState."
            )
        if self.batch_size is not None:
            v = self.batch_size
            if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < 1:
                raise ValueError(f"Invalid value for 'batch_size': {v!r}. Use None or an integer >= 1.")

    def _fit_validate(self, X, reset: bool, min_samples: int = 1):
        """X as a tensor on the compute device; sets n_features_in_ when reset."""
        if isinstance(X, torch.Tensor):
            if reset:
                device = resolve_device(self.device, X)
                dtype = resolve_dtype(self.dtype, X)
                for attr in ("feature_names_in_",):
                    if hasattr(self, attr):
                        delattr(self, attr)
                t = as_tensor_2d(X, device=device, dtype=dtype, min_samples=min_samples)
                self.n_features_in_ = int(t.shape[1])
                return t
            return as_tensor_2d(
                X, device=self._device, dtype=self._dtype, n_features=self.n_features_in_,
                min_samples=min_samples,
            )
        check_array_like(X)
        try:
            # Non-finite values are reported by as_tensor_2d, with a remedy.
            arr = validate_data(
                self, X, reset=reset, dtype=[np.float64, np.float32],
                ensure_min_samples=min_samples, ensure_all_finite=False,
            )
        except ValueError as exc:
            raise ValueError(_with_remedy(str(exc), min_samples)) from None
        if reset:
            return as_tensor_2d(arr, device=resolve_device(self.device), dtype=resolve_dtype(self.dtype, arr))
        return as_tensor_2d(arr, device=self._device, dtype=self._dtype)

    def _check_initial_parameters(self, n_features, device, dtype):
        k = self.n_components
        cov = get_covariance_type(self.covariance_type)

        def tensor(v, name, shape):
            if not isinstance(v, torch.Tensor):
                try:
                    v = np.asarray(v, dtype=np.float64)
                except (TypeError, ValueError) as exc:
                    raise ValueError(
                        f"The parameter '{name}' must be an array of numbers ({exc}); pass a "
                        f"numeric array of shape {tuple(shape)}."
                    ) from None
            t = as_tensor_2d(v, name=name) if len(shape) == 2 and v.ndim == 2 else None
            if t is None:
                t = v if isinstance(v, torch.Tensor) else torch.as_tensor(v)
                if t.is_complex() or not bool(torch.isfinite(t).all()):
                    raise ValueError(
                        f"The parameter '{name}' contains NaN, infinity or complex values; "
                        f"pass finite real values."
                    )
            if tuple(t.shape) != tuple(shape):
                raise ValueError(
                    f"The parameter '{name}' should have the shape of {tuple(shape)}, but got "
                    f"{tuple(t.shape)}."
                )
            return t.to(device=device, dtype=torch.float64)

        weights = means = precisions = None
        if self.weights_init is not None:
            # scikit-learn's exact messages (and parameter names), then the remedy.
            weights = tensor(self.weights_init, "weights", (k,))
            if bool((weights < 0).any()) or bool((weights > 1).any()):
                raise ValueError(
                    "The parameter 'weights' should be in the range [0, 1], but got max value "
                    f"{float(weights.min()):.5f}, min value {float(weights.max()):.5f}. Pass "
                    f"weights_init as non-negative mixing proportions."
                )
            if abs(float(weights.sum()) - 1.0) > 1e-6:
                raise ValueError(
                    "The parameter 'weights' should be normalized, but got "
                    f"sum(weights) = {float(weights.sum()):.5f}. Divide weights_init by its sum."
                )
        if self.means_init is not None:
            means = tensor(self.means_init, "means", (k, n_features))
        if self.precisions_init is not None:
            shape = cov.expected_param_shape(k, n_features)
            name = f"{self.covariance_type} precision"
            precisions = tensor(self.precisions_init, name, shape)
            cov.check_spd(precisions, name)
        return weights, means, precisions

    def _check_fitted(self):
        check_is_fitted(self, "_params")

    # ------------------------------------------------------------------ fitting
    def _make_generator(self, device):
        rs = check_random_state(self.random_state)
        seed = int(rs.randint(np.iinfo(np.int32).max))
        gen_device = device if device.type == "cuda" else torch.device("cpu")
        gen = torch.Generator(device=gen_device)
        gen.manual_seed(seed)
        return gen

    def _initialize(self, X, sample_weight, gen, rows, user):
        weights, means, precisions = user
        k = self.n_components
        if weights is not None and means is not None and precisions is not None:
            cov = get_covariance_type(self.covariance_type)
            return GMMParams(
                weights=weights,
                means=means,
                precisions_cholesky=cov.precisions_cholesky_from_precisions(precisions),
                covariance_type=self.covariance_type,
            ).to(dtype=X.dtype)
        params = initial_params(
            X, k, self.covariance_type, self.init_params, self.reg_covar, gen, sample_weight, rows,
            hc_subset=self.hc_subset,
        )
        cov = params.cov
        return GMMParams(
            weights=params.weights if weights is None else weights.to(X.dtype),
            means=params.means if means is None else means.to(X.dtype),
            precisions_cholesky=(
                params.precisions_cholesky
                if precisions is None
                else cov.precisions_cholesky_from_precisions(precisions).to(X.dtype)
            ),
            covariance_type=self.covariance_type,
            covariances=params.covariances if precisions is None else None,
        )

    def fit(self, X, y=None, sample_weight=None, *, checkpoint=None, checkpoint_every=1):
        """Estimate the mixture's parameters with EM.

        Parameters
        ----------
        X : array-like, DataFrame, Tensor, or a source of batches
            In-memory data of shape (n_samples, n_features), or out-of-core
            data: a path to a ``.npy`` file (opened with ``mmap_mode='r'``), a
            numpy memmap, a ``torch.utils.data.DataLoader``, or any
            re-iterable of 2-D arrays / tensors or of ``(X, sample_weight)``
            pairs (see :func:`gaussmix.data.is_source`).  A source is read
            once per EM iteration; the result equals the in-memory fit up to
            the rounding of float64 sums.  Initialisation on a source runs
            ``init_params`` on a reservoir sample of at most
            ``max(20000, 20 * n_components)`` rows.
        y : ignored
        sample_weight : array-like or Tensor of shape (n_samples,), optional
            Non-negative weights; a point of weight ``w`` counts as ``w``
            copies of itself.  Sources carry their weights in their batches.
        checkpoint : str or os.PathLike, optional
            File in which to keep the EM state (an ``.npz`` archive with JSON
            metadata, written atomically).  If it exists, the fit resumes from
            it and ends with the parameters an uninterrupted fit would have;
            a checkpoint of another configuration or other data is an error.
            In distributed fits rank 0 reads and writes it.
        checkpoint_every : int, default=1
            Write the state every this many EM iterations (and at the end of
            each initialisation).

        Returns
        -------
        self : GaussianMixture
        """
        self._fit(X, sample_weight, checkpoint, checkpoint_every)
        return self

    def fit_predict(self, X, y=None, sample_weight=None):
        """Fit, then return the component label of each sample.

        Equivalent to ``fit(X).predict(X)`` (a final E-step is run).

        Parameters
        ----------
        X : array-like or Tensor of shape (n_samples, n_features)
        y : ignored
        sample_weight : array-like or Tensor of shape (n_samples,), optional

        Returns
        -------
        labels : ndarray or Tensor of shape (n_samples,)
        """
        if is_source(X):
            raise ValueError(
                "fit_predict needs in-memory data. For a source of batches call fit(source), "
                "then predict(batch) on each batch."
            )
        Xt = self._fit(X, sample_weight)
        return to_output(self._labels(Xt), isinstance(X, torch.Tensor))

    def _check_scale_out_parameters(self, checkpoint=None, checkpoint_every=1):
        if not isinstance(self.distributed, (bool, np.bool_)):
            raise ValueError(f"Invalid value for 'distributed': {self.distributed!r}. Use True or False.")
        v = self.learning_decay
        if isinstance(v, bool) or not isinstance(v, numbers.Real) or not (0.5 < v <= 1.0):
            raise ValueError(
                f"Invalid value for 'learning_decay': {v!r}. It must be in (0.5, 1] for stepwise EM "
                f"to converge (e.g. 0.6)."
            )
        v = self.learning_offset
        if isinstance(v, bool) or not isinstance(v, numbers.Real) or not (v >= 0) or not math.isfinite(v):
            raise ValueError(f"Invalid value for 'learning_offset': {v!r}. It must be a finite number >= 0.")
        if checkpoint is not None and not isinstance(checkpoint, (str, os.PathLike)):
            raise ValueError(f"Invalid checkpoint {checkpoint!r}: pass a file path (str or os.PathLike) or None.")
        v = checkpoint_every
        if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < 1:
            raise ValueError(f"Invalid value for 'checkpoint_every': {v!r}. It must be an integer >= 1.")

    def _fit_data(self, X, sample_weight, do_init, comm):
        """Validated local data, its chunks and the sample to initialise from."""
        src = as_source(X)
        shape = getattr(X, "shape", None)
        if src is None and comm.enabled and shape is not None and len(shape) == 2 and shape[0] == 0:
            # Reported on every rank by _agree_on_data, which names the empty shard.
            return SimpleNamespace(
                Xt=None, device=None, dtype=None, n_samples=0, n_features=int(shape[1]), weight_sum=0.0,
                tensor_io=isinstance(X, torch.Tensor),
            )
        if src is None:
            Xt = self._fit_validate(X, reset=do_init, min_samples=0 if comm.enabled else 2)
            n, d = Xt.shape
            if not comm.enabled and n < self.n_components:
                raise ValueError(
                    f"Expected n_samples >= n_components but got n_components = "
                    f"{self.n_components}, n_samples = {n}. Use fewer components or more data."
                )
            device, dtype = Xt.device, Xt.dtype
            w = check_sample_weight(sample_weight, n, device, dtype) if n > 0 else None
            rows = chunk_rows(n, self.n_components, d, device, dtype, self.batch_size)

            def chunks():
                return iter_chunks(Xt, w, rows)

            def fingerprint():
                total = torch.zeros(d, dtype=torch.float64, device=device)
                for xb, wb in chunks():
                    sq = xb.double().square()
                    total += (sq if wb is None else wb.double().unsqueeze(1) * sq).sum(0)
                return total.cpu().numpy()

            weight_sum = float(n) if w is None else float(w.double().sum())
            return SimpleNamespace(
                Xt=Xt, device=device, dtype=dtype, n_samples=n, n_features=d, weight_sum=weight_sum,
                chunks=chunks, rows=rows, init_X=Xt, init_w=w, fingerprint=fingerprint,
                tensor_io=isinstance(X, torch.Tensor),
            )
        if sample_weight is not None:
            raise ValueError(
                "sample_weight cannot be combined with a source of batches: let the source yield "
                "(X_batch, weight_batch) pairs instead."
            )
        first = src.first_batch()
        if do_init:
            device = resolve_device(self.device, first)
            dtype = resolve_dtype(self.dtype, first)
        else:
            device, dtype = self._device, self._dtype
        src.device, src.dtype = device, dtype
        size = max(RESERVOIR_SIZE, 20 * self.n_components)
        gen = None
        if do_init and comm.is_root:
            seed = int(check_random_state(self.random_state).randint(np.iinfo(np.int32).max))
            gen = torch.Generator().manual_seed(seed ^ 0x5EED)
        summary = reservoir_sample(src, size, gen)
        n, d = summary.n_samples, summary.n_features
        if do_init:
            for attr in ("feature_names_in_",):
                if hasattr(self, attr):
                    delattr(self, attr)
            self.n_features_in_ = d
        elif d != self.n_features_in_:
            raise ValueError(
                f"X has {d} features, but GaussianMixture is expecting {self.n_features_in_} "
                f"features as input."
            )
        if not comm.enabled and n < max(2, self.n_components):
            raise ValueError(
                f"Expected n_samples >= max(2, n_components) but got n_components = "
                f"{self.n_components}, n_samples = {n}. Use fewer components or more data."
            )
        rows = chunk_rows(n, self.n_components, d, device, dtype, self.batch_size)
        src.set_rows(rows)
        return SimpleNamespace(
            Xt=None, device=device, dtype=dtype, n_samples=n, n_features=d,
            weight_sum=summary.weight_sum, chunks=src, rows=rows, init_X=summary.sample, init_w=None,
            fingerprint=lambda: summary.feature_sumsq, tensor_io=isinstance(first, torch.Tensor),
        )

    def _config_key(self, do_init, checkpoint) -> dict:
        """Parameters that every rank (and a resumed fit) must share.

        ``random_state`` is left out: only rank 0 draws random numbers.
        """
        return {
            "n_components": int(self.n_components),
            "covariance_type": str(self.covariance_type),
            "tol": float(self.tol),
            "reg_covar": float(self.reg_covar),
            "max_iter": int(self.max_iter),
            "n_init": int(self.n_init),
            "init_params": str(self.init_params),
            "dtype": str(self._dtype),
            "fresh_init": bool(do_init),
            "checkpoint": checkpoint is not None,
            # Only when it differs from the default, so older checkpoints still match.
            **({"tol_type": str(self.tol_type)} if self.tol_type != "absolute" else {}),
        }

    def _agree_on_data(self, comm, data, config):
        """Check the shards against each other; every rank raises the same error."""
        crc = zlib.crc32(json.dumps(config, sort_keys=True, default=str).encode())
        table = comm.gather([data.n_samples, data.n_features, data.weight_sum, crc])
        n_total = int(table[:, 0].sum())
        if comm.enabled:
            empty = [r for r, v in enumerate(table[:, 0]) if v == 0]
            if empty:
                raise ValueError(
                    f"The shard of rank(s) {empty} is empty. Every rank must pass at least one "
                    f"sample to fit; split the data so that each rank gets rows."
                )
            per_rank = ", ".join(f"rank {r}: {int(v)}" for r, v in enumerate(table[:, 1]))
            if len(set(table[:, 1].tolist())) > 1:
                raise ValueError(
                    f"The ranks passed shards with different numbers of features ({per_rank}). "
                    f"Every rank must pass the same columns in the same order."
                )
            if len(set(table[:, 3].tolist())) > 1:
                raise ValueError(
                    "The ranks constructed GaussianMixture with different parameters (or dtypes, "
                    "or checkpoint arguments). Construct the estimator and call fit identically "
                    "on every rank; only the data differ."
                )
            if n_total < max(2, self.n_components):
                raise ValueError(
                    f"Expected n_samples >= max(2, n_components) over all ranks but got "
                    f"n_components = {self.n_components}, n_samples = {n_total}. Use fewer "
                    f"components or more data."
                )
        return n_total, float(table[:, 2].sum())

    def _fit(self, X, sample_weight, checkpoint=None, checkpoint_every=1):
        # A warm start continues only a model of the same structure.
        do_init = not (self.warm_start and hasattr(self, "converged_") and self._params_match())
        comm = Communicator.create(self.distributed is True)

        def validate():
            # Inside comm.run: a rank that fails here makes every rank raise.
            self._check_hyperparameters()
            self._check_scale_out_parameters(checkpoint, checkpoint_every)
            return self._fit_data(X, sample_weight, do_init, comm)

        data = comm.run(validate, "validating the parameters and the data")
        d = data.n_features
        device, dtype = data.device, data.dtype
        self._device, self._dtype = device, dtype
        self._tensor_io = data.tensor_io
        self._online = None
        config = self._config_key(do_init, checkpoint)
        n_total, weight_total = self._agree_on_data(comm, data, config)
        rows = data.rows
        chunks = comm.guard(data.chunks)

        user = (
            comm.run(lambda: self._check_initial_parameters(d, device, dtype), "checking the initial parameters")
            if do_init else None
        )
        gen = self._make_generator(device) if do_init else None
        n_init = self.n_init if do_init else 1
        ckpt, state = None, None
        if checkpoint is not None:
            sumsq = comm.gather(comm.run(data.fingerprint, "summarising the data")).sum(0)
            rs = self.random_state
            config.update(
                random_state=rs if rs is None or isinstance(rs, numbers.Integral) else type(rs).__name__,
                n_features=int(d), n_samples=n_total, weight_sum=weight_total,
                feature_sumsq=[float(v) for v in sumsq], user_init=_init_digest(user),
            )
            ckpt = FitCheckpoint(checkpoint, config, self.covariance_type)
            state = comm.from_root(ckpt.load, "reading the checkpoint")

        def save(*args):
            if ckpt is None or not comm.is_root:
                return
            try:
                ckpt.save(*args)
            except Exception as exc:  # noqa: BLE001 - reported on every rank
                comm.fail_later(exc)

        def share(fn):
            # Tensors cross ranks on the CPU; each rank moves them to its device.
            if not comm.enabled:
                return fn()
            return comm.from_root(lambda: fn().to(device="cpu"), "initialising").to(device=device)

        best: EMResult | None = None
        best_lb = -math.inf
        start = 0
        self._resumed_from_ = None
        if state is not None:
            start = state["init_index"]
            if state["best"] is not None:
                best = _move_result(state["best"], device, dtype)
                best_lb = best.lower_bound
        for init in range(start, n_init):
            if self.verbose:
                print(f"Initialization {init}")
            t0 = time.perf_counter()
            resumed = state is not None and init == start
            if resumed:
                current = _move_result(state["current"], device, dtype)
                if gen is not None and state["generator_state"] is not None:
                    gen.set_state(state["generator_state"].to(gen.get_state().device))
                self._resumed_from_ = (init, current.n_iter)
            elif do_init:
                current = EMResult(share(lambda: self._initialize_root(data, gen, rows, user)), False, 0, -math.inf, [])
            else:
                current = EMResult(
                    share(lambda: self._params.to(device=device, dtype=dtype)), False, 0, self.lower_bound_, []
                )
            params, lower_bound = current.params, current.lower_bound
            self._init_time_ = time.perf_counter() - t0
            gen_state = gen.get_state() if (ckpt is not None and gen is not None) else None
            if resumed and state["finished"]:
                result = current
            elif self.max_iter == 0:
                result = EMResult(params, False, 0, lower_bound, [])
            else:
                if not resumed:
                    save(init, gen_state, current, False, best)
                result = run_em(
                    chunks, params, reg_covar=self.reg_covar, tol=self.tol,
                    max_iter=self.max_iter, lower_bound=lower_bound, tol_type=self.tol_type,
                    reduce=comm.reduce_stats if comm.enabled else None,
                    gather=comm.all_gather_cat if comm.enabled else None,
                    callback=self._fit_callback(save, checkpoint_every, init, gen_state, best, current),
                    start_iter=current.n_iter, lower_bounds=current.lower_bounds,
                )
            if self.verbose:
                state_msg = "converged" if result.converged else "did not converge"
                print(f"Initialization {state_msg}. lower bound {result.lower_bound:.5f}")
            if best is None or result.lower_bound > best_lb:
                best, best_lb = result, result.lower_bound
            save(init, gen_state, result, True, best)
        comm.finish()
        if not math.isfinite(best.lower_bound) and self.max_iter > 0:
            raise ValueError(
                "EM produced a non-finite log-likelihood. Scale the input data or increase reg_covar."
            )
        if not best.converged and self.max_iter > 0:
            warnings.warn(
                "Best performing initialization did not converge. Try different init "
                "parameters, or increase max_iter, tol, or check for degenerate data.",
                ConvergenceWarning,
            )
        warn_if_reg_covar_dominates(best.params, self.reg_covar)
        self._set_result(best)
        return data.Xt

    def _params_match(self) -> bool:
        """Whether the fitted model has the current n_components and covariance_type;
        after ``set_params`` changed them, ``warm_start`` fits afresh (with a warning)."""
        p = self._params
        if p.n_components == self.n_components and p.covariance_type == self.covariance_type:
            return True
        warnings.warn(
            f"warm_start=True, but the fitted model has n_components={p.n_components} and "
            f"covariance_type={p.covariance_type!r} while the estimator now asks for "
            f"{self.n_components} and {self.covariance_type!r}: fitting afresh.",
            UserWarning, stacklevel=4,
        )
        return False

    def _initialize_root(self, data, gen, rows, user):
        """Initial parameters from this rank's data (rank 0 in distributed fits)."""
        if any(u is None for u in user) and data.init_X.shape[0] < self.n_components:
            raise ValueError(
                f"Initialisation uses {data.init_X.shape[0]} samples of this rank's data, fewer "
                f"than n_components={self.n_components}. Give rank 0 at least n_components "
                f"samples, or pass weights_init, means_init and precisions_init."
            )
        return self._initialize(data.init_X, data.init_w, gen, rows, user)

    def _fit_callback(self, save, every, init, gen_state, best, start: EMResult):
        """Verbose output and checkpoints after each M-step."""
        verbose_cb = self._verbose_callback()
        history = list(start.lower_bounds)

        def cb(n_iter, lb, params, converged):
            history.append(lb)
            # run_em's own decision, so a checkpoint of the last iteration is
            # marked finished exactly when the loop stops there.
            done = converged or n_iter >= self.max_iter
            if verbose_cb is not None:
                verbose_cb(n_iter, lb, params)
            if n_iter % every == 0 or done:
                save(init, gen_state, EMResult(params, converged, n_iter, lb, list(history)), done, best)

        return cb

    def partial_fit(self, X, y=None, sample_weight=None):
        """Update the model with one mini-batch by stepwise (online) EM.

        The batch's statistics, normalised per unit weight, are blended into
        running statistics with step ``eta_t = (learning_offset + t) **
        (-learning_decay)`` and the parameters are their M-step (Cappé &
        Moulines, 2009; see :mod:`gaussmix.online`).  The first call
        initialises the parameters from its batch with ``init_params`` (or
        from ``weights_init``/``means_init``/``precisions_init``), which
        therefore needs at least ``n_components`` samples; after :meth:`fit`,
        the updates start from the fitted parameters.

        Parameters
        ----------
        X : array-like or Tensor of shape (n_samples, n_features)
        y : ignored
        sample_weight : array-like or Tensor of shape (n_samples,), optional

        Returns
        -------
        self : GaussianMixture
            ``n_iter_`` counts the batches seen, ``lower_bound_`` is the mean
            log-likelihood of the last batch before its update, and
            ``converged_`` stays False (stepwise EM has no stopping rule).
        """
        self._check_hyperparameters()
        self._check_scale_out_parameters()
        if self.distributed:
            raise ValueError(
                "partial_fit does not support distributed=True; use fit on each rank's shard, or "
                "call partial_fit on one process."
            )
        first = not hasattr(self, "_params")
        Xt = self._fit_validate(X, reset=first, min_samples=1)
        n, d = Xt.shape
        state = None if first else getattr(self, "_online", None)
        if first:
            if n < self.n_components:
                raise ValueError(
                    f"The first batch given to partial_fit has {n} samples, fewer than "
                    f"n_components={self.n_components}; the parameters are initialised from it. "
                    f"Pass a first batch of at least n_components samples."
                )
            self._device, self._dtype = Xt.device, Xt.dtype
            self._tensor_io = isinstance(X, torch.Tensor)
        w = check_sample_weight(sample_weight, n, Xt.device, Xt.dtype)
        if first:
            rows = chunk_rows(n, self.n_components, d, Xt.device, Xt.dtype, self.batch_size)
            user = self._check_initial_parameters(d, Xt.device, Xt.dtype)
            params = self._initialize(Xt, w, self._make_generator(Xt.device), rows, user)
        else:
            params = self._params
        history = [] if state is None else list(self.lower_bounds_)
        state, params, ll = online_step(
            state, Xt, w, params, reg_covar=self.reg_covar,
            learning_decay=self.learning_decay, learning_offset=self.learning_offset,
        )
        history.append(ll)
        self._set_result(EMResult(params, False, state.n_updates + 1, ll, history))
        self._online = state
        return self

    def _verbose_callback(self):
        if not self.verbose:
            return None
        last = [time.perf_counter(), -math.inf]

        def cb(n_iter, lb, params):
            if n_iter % self.verbose_interval == 0:
                now = time.perf_counter()
                msg = f"  Iteration {n_iter}"
                if self.verbose > 1:
                    msg += f"\t time lapse {now - last[0]:.5f}s\t ll change {lb - last[1]:.5f}"
                print(msg)
                last[0], last[1] = now, lb

        return cb

    def _set_result(self, result: EMResult):
        params = result.params.to(device=self._device, dtype=self._dtype)
        if params.covariances is None:
            params = GMMParams(
                params.weights, params.means, params.precisions_cholesky,
                params.covariance_type, params.get_covariances(),
            )
        self._params = params
        out = self._tensor_io
        self.weights_ = to_output(params.weights, out)
        self.means_ = to_output(params.means, out)
        self.covariances_ = to_output(params.covariances, out)
        self.precisions_cholesky_ = to_output(params.precisions_cholesky, out)
        self.precisions_ = to_output(params.get_precisions(), out)
        self.converged_ = bool(result.converged)
        self.n_iter_ = int(result.n_iter)
        self.lower_bound_ = float(result.lower_bound)
        self.lower_bounds_ = [float(v) for v in result.lower_bounds]
        self.fit_events_ = list(result.events)
        self.n_reseeds_ = sum(len(e["components"]) for e in result.events if e["kind"] == "reseed")

    # ---------------------------------------------------------------- inference
    def _chunked(self, Xt, fn):
        rows = chunk_rows(Xt.shape[0], self.n_components, Xt.shape[1], Xt.device, Xt.dtype, self.batch_size)
        return torch.cat([fn(xb) for xb, _ in iter_chunks(Xt, None, rows)])

    def _labels(self, Xt):
        return self._chunked(Xt, lambda xb: e_step(xb, self._params)[0].argmax(1))

    def _predict_input(self, X):
        self._check_fitted()
        return self._fit_validate(X, reset=False)

    def predict(self, X):
        """Component label of each sample.

        Parameters
        ----------
        X : array-like or Tensor of shape (n_samples, n_features)

        Returns
        -------
        labels : ndarray or Tensor of shape (n_samples,)
        """
        Xt = self._predict_input(X)
        return to_output(self._labels(Xt), isinstance(X, torch.Tensor))

    def predict_proba(self, X):
        """Posterior probability of each component for each sample.

        Parameters
        ----------
        X : array-like or Tensor of shape (n_samples, n_features)

        Returns
        -------
        resp : ndarray or Tensor of shape (n_samples, n_components)
        """
        Xt = self._predict_input(X)
        resp = self._chunked(Xt, lambda xb: torch.exp(e_step(xb, self._params)[0]))
        return to_output(resp, isinstance(X, torch.Tensor))

    def score_samples(self, X):
        """Log-likelihood of each sample under the mixture.

        Parameters
        ----------
        X : array-like or Tensor of shape (n_samples, n_features)

        Returns
        -------
        log_prob : ndarray or Tensor of shape (n_samples,)
        """
        Xt = self._predict_input(X)
        return to_output(self._score_samples(Xt), isinstance(X, torch.Tensor))

    def _score_samples(self, Xt):
        return self._chunked(Xt, lambda xb: e_step(xb, self._params)[1])

    def score(self, X, y=None):
        """Mean per-sample log-likelihood of ``X``.

        Parameters
        ----------
        X : array-like or Tensor of shape (n_samples, n_features)
        y : ignored

        Returns
        -------
        float
        """
        Xt = self._predict_input(X)
        return float(self._score_samples(Xt).double().mean())

    def _n_parameters(self):
        return self._params.n_parameters()

    def bic(self, X):
        """Bayesian information criterion on ``X`` (lower is better).

        ``-2 * log L + n_parameters * log(n_samples)``.
        """
        Xt = self._predict_input(X)
        n = Xt.shape[0]
        ll = float(self._score_samples(Xt).double().sum())
        return -2.0 * ll + self._n_parameters() * math.log(n)

    def aic(self, X):
        """Akaike information criterion on ``X`` (lower is better).

        ``-2 * log L + 2 * n_parameters``.
        """
        Xt = self._predict_input(X)
        ll = float(self._score_samples(Xt).double().sum())
        return -2.0 * ll + 2.0 * self._n_parameters()

    def sample(self, n_samples=1):
        """Draw samples from the fitted mixture.

        Parameters
        ----------
        n_samples : int, default=1

        Returns
        -------
        X : ndarray or Tensor of shape (n_samples, n_features)
        y : ndarray or Tensor of shape (n_samples,)
            Component of each sample (sorted, as in scikit-learn).
        """
        self._check_fitted()
        if isinstance(n_samples, bool) or not isinstance(n_samples, numbers.Integral) or n_samples < 1:
            raise ValueError(
                f"Invalid value for 'n_samples': {n_samples!r}. The sampling requires at least one sample."
            )
        p = self._params
        gen = self._make_generator(p.means.device)
        gd = gen.device
        counts = _multinomial_counts(int(n_samples), p.weights.double(), gen)
        labels = torch.repeat_interleave(torch.arange(p.n_components, device=gd), counts.to(gd))
        z = torch.randn(int(n_samples), p.n_features, generator=gen, device=gd, dtype=torch.float64)
        z = z.to(p.means.device)
        labels = labels.to(p.means.device)
        # Each component's covariance matrix (one for a shared covariance);
        # the Cholesky factor of a diagonal one is its square root.
        mats = p.cov.matrices(p.get_covariances().double(), p.n_features)
        chol = torch.linalg.cholesky(mats)
        x = (torch.einsum("nij,nj->ni", chol[labels], z) if mats.shape[0] > 1
             else z @ chol[0].T)
        x = (x + p.means.double()[labels]).to(p.means.dtype)
        out = self._tensor_io
        return to_output(x, out), to_output(labels, out)

    def to_torch_distribution(self):
        """The fitted mixture as a ``torch.distributions.MixtureSameFamily``.

        Returns
        -------
        torch.distributions.MixtureSameFamily
            Categorical mixing over MultivariateNormal components.
        """
        self._check_fitted()
        D = torch.distributions
        p = self._params
        mix = D.Categorical(probs=p.weights)
        k, d = p.n_components, p.n_features
        full = p.cov.matrices(p.get_covariances(), d).expand(k, d, d)
        comp = D.MultivariateNormal(p.means, scale_tril=torch.linalg.cholesky(full))
        return D.MixtureSameFamily(mix, comp)

    @property
    def params_(self) -> GMMParams:
        """The fitted parameters as a :class:`gaussmix.params.GMMParams` of tensors."""
        self._check_fitted()
        return self._params

    def save(self, path):
        """Write the fitted model to a file that :func:`gaussmix.load` reads.

        The file is a ``.npz`` archive of the parameter arrays plus JSON
        metadata; loading it never unpickles and never runs code.  See
        :mod:`gaussmix.io`.

        Parameters
        ----------
        path : str or path-like
            Destination, conventionally ending in ``.npz``.
        """
        from .io import save_model

        save_model(self, path)


def _move_result(result: EMResult, device, dtype) -> EMResult:
    return EMResult(
        result.params.to(device=device, dtype=dtype), result.converged, result.n_iter,
        result.lower_bound, list(result.lower_bounds),
    )


def _init_digest(user) -> str | None:
    """Digest of user-supplied initial parameters (part of a checkpoint's configuration)."""
    if user is None:
        return None
    h = hashlib.sha256()
    for t in user:
        h.update(b"none" if t is None else t.detach().double().cpu().numpy().tobytes())
    return h.hexdigest()


def _multinomial_counts(n: int, probs: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Component counts of ``n`` draws (sequential binomials, reproducible)."""
    counts = torch.zeros(probs.shape[0], dtype=torch.long)
    remaining, mass = n, 1.0
    p = probs.cpu().tolist()
    u_gen = torch.Generator().manual_seed(int(torch.randint(2**31 - 1, (1,), generator=gen, device=gen.device)))
    for i, pi in enumerate(p[:-1]):
        if remaining == 0 or mass <= 0:
            break
        q = min(max(pi / mass, 0.0), 1.0)
        c = int(torch.binomial(torch.tensor([float(remaining)]), torch.tensor([q]), generator=u_gen))
        counts[i] = c
        remaining -= c
        mass -= pi
    counts[-1] += remaining
    return counts
