"""The scikit-learn-compatible variational Bayesian Gaussian mixture."""

from __future__ import annotations

import numbers

import numpy as np
import torch

from ._validation import to_output
from .covariance import COVARIANCE_TYPES, get_covariance_type
from .em import EMResult
from .fitting import check_checkpoint_arguments
from .init import initial_stats
from .mixture import BaseMixture, check_real
from .variational import WEIGHT_PRIORS, Priors, VariationalUpdate

__all__ = ["BayesianGaussianMixture"]


def _prior_tensor(value, name: str, shape: tuple, device) -> torch.Tensor:
    """A user-given prior as a finite float64 tensor of ``shape``."""
    try:
        t = value if isinstance(value, torch.Tensor) else torch.as_tensor(np.asarray(value, dtype=np.float64))
    except (TypeError, ValueError) as exc:
        raise ValueError(
            f"The parameter '{name}' must be an array of numbers ({exc}); pass a numeric array "
            f"of shape {shape}."
        ) from None
    if tuple(t.shape) != tuple(shape):
        raise ValueError(
            f"The parameter '{name}' should have the shape of {tuple(shape)}, but got "
            f"{tuple(t.shape)}."
        )
    if t.is_complex() or not bool(torch.isfinite(t).all()):
        raise ValueError(f"The parameter '{name}' contains NaN, infinity or complex values; pass finite real values.")
    return t.to(device=device, dtype=torch.float64)


class BayesianGaussianMixture(BaseMixture):
    """Variational Bayesian estimation of a Gaussian mixture, on PyTorch.

    A drop-in replacement for :class:`sklearn.mixture.BayesianGaussianMixture`:
    a Dirichlet-process (stick-breaking) or Dirichlet-distribution prior over
    the weights and a Gaussian-Wishart prior over each component, fitted by
    mean-field variational inference (Bishop, 2006, sec. 10.2).  Components
    the data do not need end with weights near zero, so ``n_components`` is
    an upper bound rather than a choice.  Like
    :class:`~gaussmix.GaussianMixture` it takes torch tensors on any device,
    sample weights and sources of batches, and fits across the ranks of a
    ``torch.distributed`` group: the update uses the same additive totals as
    EM (see :mod:`gaussmix.variational`).

    Parameters
    ----------
    n_components : int, default=1
        Upper bound on the number of components.
    covariance_type : {"full", "tied", "diag", "spherical"}, default="full"
    tol : float, default=1e-3
        The fit stops when the lower bound changes by less than this.
    reg_covar : float, default=1e-6
        Non-negative amount added to the diagonal of each component's data
        covariance before the posterior update.
    max_iter : int, default=100
        Number of variational iterations per initialisation.
    n_init : int, default=1
        Number of initialisations; the one with the highest lower bound is
        kept.
    init_params : {"kmeans", "k-means++", "random", "random_from_data", "hc"}, default="kmeans"
        How the initial responsibilities are found (as in
        :class:`~gaussmix.GaussianMixture`).
    weight_concentration_prior_type : {"dirichlet_process", "dirichlet_distribution"}, default="dirichlet_process"
    weight_concentration_prior : float > 0, optional
        Concentration of the weight prior (``gamma_0`` or ``alpha_0``); default
        ``1 / n_components``.  Smaller values put more mass on few components.
    mean_precision_prior : float > 0, optional
        ``beta_0``, how strongly the means are pulled to ``mean_prior``;
        default 1.
    mean_prior : array-like or Tensor of shape (n_features,), optional
        ``m_0``; default the data's mean.
    degrees_of_freedom_prior : float > n_features - 1, optional
        ``nu_0``; default ``n_features``.
    covariance_prior : float or array-like, optional
        The Wishart prior's covariance: (n_features, n_features) symmetric
        positive definite for ``full`` and ``tied``, (n_features,) positive
        for ``diag``, a positive number for ``spherical``; default the data's
        covariance (its diagonal for ``diag``, mean variance for
        ``spherical``).
    random_state : int, RandomState instance or None, default=None
    warm_start : bool, default=False
        Continue from the last fit's posterior on the next ``fit``.
    verbose : int, default=0
    verbose_interval : int, default=10
    device : str or torch.device, optional
        Where to compute (default: the input tensor's device, else the CPU).
    dtype : {"float32", "float64"} or torch dtype, optional
        Precision of the E-step (default: follows the input).  Totals and
        the posterior are always float64.
    batch_size : int, optional
        Rows per chunk (changes only the order of float64 summation).
    distributed : bool, default=False
        Fit across the ranks of an initialised ``torch.distributed`` process
        group, each passing its own shard (as in
        :class:`~gaussmix.GaussianMixture`).

    Attributes
    ----------
    weights_ : ndarray or Tensor (K,)
        Posterior mean weights.
    means_ : ndarray or Tensor (K, D)
        Posterior means of the component means.
    covariances_, precisions_, precisions_cholesky_ : ndarray or Tensor
        The Wishart posterior's scale divided by its degrees of freedom, its
        inverse and the inverse's Cholesky factor (scikit-learn's shapes).
    weight_concentration_ : ndarray or tuple of two ndarrays
        Posterior Dirichlet concentrations, or the Beta parameters of the
        stick fractions for the Dirichlet process.
    mean_precision_ : ndarray (K,)
    degrees_of_freedom_ : ndarray (K,), or a scalar for ``tied``
    weight_concentration_prior_, mean_precision_prior_, mean_prior_,
    degrees_of_freedom_prior_, covariance_prior_
        The priors used (defaults resolved against the data).
    lower_bound_ : float
        The evidence lower bound of the best run at its last iteration (up to
        the constants scikit-learn drops).
    lower_bounds_ : list of float
    converged_ : bool
    n_iter_ : int
    n_features_in_ : int
    feature_names_in_ : ndarray of str

    Examples
    --------
    >>> import numpy as np
    >>> from gaussmix import BayesianGaussianMixture
    >>> X = np.r_[np.random.randn(100, 2), np.random.randn(100, 2) + 8]
    >>> bgm = BayesianGaussianMixture(n_components=5, random_state=0).fit(X)
    >>> int((bgm.weights_ > 0.05).sum())
    2
    """

    def __init__(
        self,
        *,
        n_components=1,
        covariance_type="full",
        tol=1e-3,
        reg_covar=1e-6,
        max_iter=100,
        n_init=1,
        init_params="kmeans",
        weight_concentration_prior_type="dirichlet_process",
        weight_concentration_prior=None,
        mean_precision_prior=None,
        mean_prior=None,
        degrees_of_freedom_prior=None,
        covariance_prior=None,
        random_state=None,
        warm_start=False,
        verbose=0,
        verbose_interval=10,
        device=None,
        dtype=None,
        batch_size=None,
        distributed=False,
    ):
        self.n_components = n_components
        self.covariance_type = covariance_type
        self.tol = tol
        self.reg_covar = reg_covar
        self.max_iter = max_iter
        self.n_init = n_init
        self.init_params = init_params
        self.weight_concentration_prior_type = weight_concentration_prior_type
        self.weight_concentration_prior = weight_concentration_prior
        self.mean_precision_prior = mean_precision_prior
        self.mean_prior = mean_prior
        self.degrees_of_freedom_prior = degrees_of_freedom_prior
        self.covariance_prior = covariance_prior
        self.random_state = random_state
        self.warm_start = warm_start
        self.verbose = verbose
        self.verbose_interval = verbose_interval
        self.device = device
        self.dtype = dtype
        self.batch_size = batch_size
        self.distributed = distributed

    # ------------------------------------------------------------------ checks
    _relative_weights = False  # the posterior weighs counts against the priors

    def _check_hyperparameters(self):
        """Raise a ValueError naming the parameter and its valid values."""
        self._check_common_hyperparameters()
        if self.covariance_type not in COVARIANCE_TYPES:
            raise ValueError(
                f"Invalid value for 'covariance_type': {self.covariance_type!r}. The variational "
                f"mixture has scikit-learn's four: {sorted(COVARIANCE_TYPES)} (mclust's other "
                f"models are fitted by GaussianMixture)."
            )
        if self.weight_concentration_prior_type not in WEIGHT_PRIORS:
            raise ValueError(
                f"Invalid value for 'weight_concentration_prior_type': "
                f"{self.weight_concentration_prior_type!r}. Use 'dirichlet_process' or "
                f"'dirichlet_distribution'."
            )
        check_real(self, "weight_concentration_prior", strict=True, optional=True)
        check_real(self, "mean_precision_prior", strict=True, optional=True)
        check_real(self, "degrees_of_freedom_prior", strict=True, optional=True)

    def _check_scale_out_parameters(self, checkpoint=None, checkpoint_every=1):
        if not isinstance(self.distributed, (bool, np.bool_)):
            raise ValueError(f"Invalid value for 'distributed': {self.distributed!r}. Use True or False.")
        check_checkpoint_arguments(checkpoint, checkpoint_every)

    def _check_initial_parameters(self, n_features, device, dtype):
        # A variational fit always starts from a partition of the data.
        return None, None, None

    def _resolve_priors(self, d: int, mean: torch.Tensor, data_cov: torch.Tensor) -> Priors:
        """The priors of this fit, defaults taken from the data's moments."""
        cov = get_covariance_type(self.covariance_type)
        device = mean.device
        alpha = 1.0 / self.n_components if self.weight_concentration_prior is None else float(
            self.weight_concentration_prior)
        beta = 1.0 if self.mean_precision_prior is None else float(self.mean_precision_prior)
        if self.mean_prior is None:
            m0 = mean
        else:
            m0 = _prior_tensor(self.mean_prior, "mean_prior", (d,), device)
        if self.degrees_of_freedom_prior is None:
            nu = float(d)
        elif self.degrees_of_freedom_prior > d - 1.0:
            nu = float(self.degrees_of_freedom_prior)
        else:
            raise ValueError(
                f"The parameter 'degrees_of_freedom_prior' should be greater than {d - 1}, but got "
                f"{self.degrees_of_freedom_prior:.3f}. Use a value > n_features - 1 (default: "
                f"n_features = {d})."
            )
        if self.covariance_prior is None:
            w0 = cov.prior_covariance(data_cov)
        else:
            shape = cov.covariance_prior_shape(d)
            w0 = _prior_tensor(self.covariance_prior, "covariance_prior", shape, device)
            cov.check_covariance_prior(w0, "covariance_prior")
        return Priors(alpha, beta, m0, nu, w0)

    def _config_key(self, do_init, checkpoint) -> dict:
        """Parameters that every rank must share (``random_state`` left out)."""

        def plain(v):
            # Array priors by value; validation (later, on every rank) reports bad ones.
            if v is None or isinstance(v, (str, numbers.Real)):
                return v
            if isinstance(v, torch.Tensor):
                v = v.detach().cpu().numpy()
            return str(np.asarray(v).tolist())

        return {
            "estimator": type(self).__name__,
            **{name: plain(getattr(self, name)) for name in (
                "n_components", "covariance_type", "tol", "reg_covar", "max_iter", "n_init",
                "init_params", "weight_concentration_prior_type", "weight_concentration_prior",
                "mean_precision_prior", "mean_prior", "degrees_of_freedom_prior",
                "covariance_prior")},
            "dtype": str(self._dtype),
            "fresh_init": bool(do_init),
            "checkpoint": checkpoint is not None,
        }

    # ------------------------------------------------------------------ fitting
    def _prepare_fit(self, data, chunks, comm):
        """Resolve the priors (a pass over the data for their defaults)."""
        mean, data_cov = self._data_moments(data, chunks, comm)
        self._set_priors(self._resolve_priors(data.n_features, mean, data_cov))

    def _set_priors(self, priors: Priors):
        """The update for ``priors`` and the ``*_prior_`` attributes that report them."""
        self._update = VariationalUpdate(
            self.covariance_type, self.weight_concentration_prior_type, priors, self.reg_covar
        )
        out = self._tensor_io

        def scalar_or_array(t):
            return to_output(t, out) if (out or t.dim() > 0) else float(t)

        self.weight_concentration_prior_ = priors.weight_concentration
        self.mean_precision_prior_ = priors.mean_precision
        self.mean_prior_ = to_output(priors.mean.to(self._dtype), out)
        self.degrees_of_freedom_prior_ = priors.degrees_of_freedom
        self.covariance_prior_ = scalar_or_array(priors.covariance.to(self._dtype))

    def _update_rule(self):
        return self._update

    def _initialize(self, X, sample_weight, gen, rows, user):
        stats, shift = initial_stats(
            X, self.n_components, self.covariance_type, self.init_params, gen, sample_weight, rows
        )
        eps = torch.finfo(X.dtype).eps
        return self._update.params(stats, shift, eps).to(dtype=X.dtype)

    def fit(self, X, y=None, sample_weight=None, *, checkpoint=None, checkpoint_every=1):
        """Estimate the variational posterior.

        Parameters
        ----------
        X : array-like, DataFrame, Tensor, or a source of batches
            In-memory data of shape (n_samples, n_features), or out-of-core
            data as :meth:`gaussmix.GaussianMixture.fit` takes it.
        y : ignored
        sample_weight : array-like or Tensor of shape (n_samples,), optional
            Non-negative weights; a point of weight ``w`` counts as ``w``
            copies of itself (also in the default priors).
        checkpoint : str or os.PathLike, optional
            File in which to keep the state of the fit; an existing one is
            resumed, to the posterior an uninterrupted fit ends with (see
            :meth:`gaussmix.GaussianMixture.fit`).
        checkpoint_every : int, default=1
            Write the state every this many iterations.

        Returns
        -------
        self : BayesianGaussianMixture
        """
        self._fit(X, sample_weight, checkpoint, checkpoint_every)
        return self

    def _set_result(self, result: EMResult):
        params = result.params.to(device=self._device, dtype=self._dtype)
        self._params = params
        out = self._tensor_io
        self.weights_ = to_output(params.weights, out)
        self.means_ = to_output(params.means, out)
        self.covariances_ = to_output(params.covariances, out)
        self.precisions_cholesky_ = to_output(params.precisions_cholesky, out)
        self.precisions_ = to_output(params.get_precisions(), out)
        prior = WEIGHT_PRIORS[self.weight_concentration_prior_type]
        self.weight_concentration_ = prior.output(params.weight_concentration, lambda t: to_output(t, out))
        self.mean_precision_ = to_output(params.mean_precision, out)
        dof = params.degrees_of_freedom
        self.degrees_of_freedom_ = to_output(dof, out) if (out or dof.dim() > 0) else float(dof)
        self.converged_ = bool(result.converged)
        self.n_iter_ = int(result.n_iter)
        self.lower_bound_ = float(result.lower_bound)
        self.lower_bounds_ = [float(v) for v in result.lower_bounds]
