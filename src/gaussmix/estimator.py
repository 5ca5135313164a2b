"""The scikit-learn-compatible estimator: a thin shell over the functional core."""

from __future__ import annotations

import math
import numbers
import time
import warnings

import numpy as np
import torch
from sklearn.base import BaseEstimator, DensityMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted, validate_data

from ._validation import (
    as_tensor_2d,
    check_sample_weight,
    resolve_device,
    resolve_dtype,
    to_output,
)
from .covariance import COVARIANCE_TYPES, get_covariance_type
from .data import chunk_rows, iter_chunks
from .em import EMResult, e_step, run_em
from .init import INIT_METHODS, initial_params
from .params import GMMParams

__all__ = ["GaussianMixture"]


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
        Convergence threshold on the change of the mean log-likelihood per
        sample between iterations.
    reg_covar : float, default=1e-6
        Non-negative amount added to the diagonal of every covariance, in the
        squared units of the data (scale the data if its variance is tiny).
    max_iter : int, default=100
        Number of EM iterations per initialisation.
    n_init : int, default=1
        Number of initialisations; the one with the highest final lower
        bound is kept.
    init_params : {"kmeans", "k-means++", "random", "random_from_data"}, default="kmeans"
        How the initial responsibilities are found.
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
        from free memory).

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

    # ------------------------------------------------------------------ checks
    def _check_hyperparameters(self):
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
        integer("verbose_interval", 1)
        real("tol")
        real("reg_covar")
        get_covariance_type(self.covariance_type)
        if self.init_params not in INIT_METHODS:
            raise ValueError(
                f"Invalid init_params {self.init_params!r}: choose one of {list(INIT_METHODS)}."
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
        arr = validate_data(
            self, X, reset=reset, dtype=[np.float64, np.float32], ensure_min_samples=min_samples
        )
        if reset:
            return as_tensor_2d(arr, device=resolve_device(self.device), dtype=resolve_dtype(self.dtype, arr))
        return as_tensor_2d(arr, device=self._device, dtype=self._dtype)

    def _check_initial_parameters(self, n_features, device, dtype):
        k = self.n_components
        cov = get_covariance_type(self.covariance_type)

        def tensor(v, name, shape):
            t = as_tensor_2d(np.asarray(v, dtype=np.float64) if not isinstance(v, torch.Tensor) else v,
                             name=name) if len(shape) == 2 else None
            if t is None:
                t = v if isinstance(v, torch.Tensor) else torch.as_tensor(np.asarray(v, dtype=np.float64))
                if not bool(torch.isfinite(t).all()):
                    raise ValueError(f"'{name}' contains NaN or infinity.")
            if tuple(t.shape) != tuple(shape):
                raise ValueError(
                    f"The parameter '{name}' should have the shape of {tuple(shape)}, but got "
                    f"{tuple(t.shape)}."
                )
            return t.to(device=device, dtype=torch.float64)

        weights = means = precisions = None
        if self.weights_init is not None:
            weights = tensor(self.weights_init, "weights_init", (k,))
            if bool((weights < 0).any()) or bool((weights > 1).any()):
                raise ValueError(
                    "The parameter 'weights_init' should be in the range [0, 1], but got "
                    f"min value {float(weights.min()):.5f}, max value {float(weights.max()):.5f}."
                )
            if abs(float(weights.sum()) - 1.0) > 1e-6:
                raise ValueError(
                    "The parameter 'weights_init' should be normalized, but got "
                    f"sum(weights) = {float(weights.sum()):.5f}. Divide it by its sum."
                )
        if self.means_init is not None:
            means = tensor(self.means_init, "means_init", (k, n_features))
        if self.precisions_init is not None:
            shape = cov.expected_param_shape(k, n_features)
            precisions = tensor(self.precisions_init, "precisions_init", shape)
            cov.check_spd(precisions, "precisions_init")
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
            X, k, self.covariance_type, self.init_params, self.reg_covar, gen, sample_weight, rows
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

    def fit(self, X, y=None, sample_weight=None):
        """Estimate the mixture's parameters with EM.

        Parameters
        ----------
        X : array-like, DataFrame or Tensor of shape (n_samples, n_features)
        y : ignored
        sample_weight : array-like or Tensor of shape (n_samples,), optional
            Non-negative weights; a point of weight ``w`` counts as ``w``
            copies of itself.

        Returns
        -------
        self : GaussianMixture
        """
        self._fit(X, sample_weight)
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
        Xt = self._fit(X, sample_weight)
        return to_output(self._labels(Xt), isinstance(X, torch.Tensor))

    def _fit(self, X, sample_weight):
        self._check_hyperparameters()
        do_init = not (self.warm_start and hasattr(self, "converged_"))
        if do_init:
            Xt = self._fit_validate(X, reset=True, min_samples=2)
        else:
            Xt = self._fit_validate(X, reset=False, min_samples=2)
        n, d = Xt.shape
        if n < self.n_components:
            raise ValueError(
                f"Expected n_samples >= n_components but got n_components = "
                f"{self.n_components}, n_samples = {n}. Use fewer components or more data."
            )
        device, dtype = Xt.device, Xt.dtype
        self._device, self._dtype = device, dtype
        self._tensor_io = isinstance(X, torch.Tensor)
        w = check_sample_weight(sample_weight, n, device, dtype)
        rows = chunk_rows(n, self.n_components, d, device, dtype, self.batch_size)

        def chunks():
            return iter_chunks(Xt, w, rows)

        user = self._check_initial_parameters(d, device, dtype) if do_init else None
        gen = self._make_generator(device) if do_init else None
        n_init = self.n_init if do_init else 1
        best: EMResult | None = None
        best_lb = -math.inf
        for init in range(n_init):
            if self.verbose:
                print(f"Initialization {init}")
            t0 = time.perf_counter()
            if do_init:
                params = self._initialize(Xt, w, gen, rows, user)
                lower_bound = -math.inf
            else:
                params = self._params.to(device=device, dtype=dtype)
                lower_bound = self.lower_bound_
            self._init_time_ = time.perf_counter() - t0
            if self.max_iter == 0:
                result = EMResult(params, False, 0, lower_bound, [])
            else:
                result = run_em(
                    chunks, params, reg_covar=self.reg_covar, tol=self.tol,
                    max_iter=self.max_iter, lower_bound=lower_bound,
                    callback=self._verbose_callback(),
                )
            if self.verbose:
                state = "converged" if result.converged else "did not converge"
                print(f"Initialization {state}. lower bound {result.lower_bound:.5f}")
            if best is None or result.lower_bound > best_lb:
                best, best_lb = result, result.lower_bound
        if not math.isfinite(best.lower_bound) and self.max_iter > 0:
            raise ValueError(
                "EM produced a non-finite log-likelihood. Scale the input data or increase reg_covar."
            )
        if not best.converged and self.max_iter > 0:
            warnings.warn(
                f"Best performing initialization did not converge in {self.max_iter} "
                f"iterations. Try different init parameters, or increase max_iter, tol, "
                f"or check for degenerate data.",
                ConvergenceWarning,
            )
        self._set_result(best)
        return Xt

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
        cov = p.get_covariances().double()
        kind = p.covariance_type
        if kind == "full":
            L = torch.linalg.cholesky(cov)
            x = torch.einsum("nij,nj->ni", L[labels], z)
        elif kind == "tied":
            x = z @ torch.linalg.cholesky(cov).T
        elif kind == "diag":
            x = z * torch.sqrt(cov)[labels]
        else:
            x = z * torch.sqrt(cov)[labels].unsqueeze(1)
        x = (x + p.means.double()[labels]).to(p.means.dtype)
        out = self._tensor_io
        return to_output(x, out), to_output(labels, out)

    def to_torch_distribution(self):
        """The fitted mixture as a ``torch.distributions.MixtureSameFamily``.

        Returns
        -------
        torch.distributions.MixtureSameFamily
            Categorical mixing over MultivariateNormal components (full, tied)
            or Independent Normal components (diag, spherical).
        """
        self._check_fitted()
        D = torch.distributions
        p = self._params
        mix = D.Categorical(probs=p.weights)
        cov = p.get_covariances()
        k, d = p.n_components, p.n_features
        if p.covariance_type in ("full", "tied"):
            full = cov if p.covariance_type == "full" else cov.expand(k, d, d)
            comp = D.MultivariateNormal(p.means, scale_tril=torch.linalg.cholesky(full))
        else:
            std = torch.sqrt(cov if p.covariance_type == "diag" else cov.unsqueeze(1).expand(k, d))
            comp = D.Independent(D.Normal(p.means, std), 1)
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
