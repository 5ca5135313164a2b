"""The scikit-learn-compatible estimator: a thin shell over the functional core."""

from __future__ import annotations

import math
import numbers

import numpy as np
import torch

from ._validation import as_tensor_2d, check_sample_weight, to_output
from .covariance import get_covariance_type
from .data import check_in_memory, chunk_rows
from .em import EMResult
from .fitting import check_checkpoint_arguments
from .init import initial_params
from .mixture import BaseMixture, check_integer
from .online import online_step
from .params import GMMParams
from .prior import ConjugatePrior, check_prior, prior_to_json
from .stopping import TOL_TYPES
from .threads import threads_for, torch_threads

__all__ = ["GaussianMixture"]


class GaussianMixture(BaseMixture):
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
        are always accumulated in float64.  On the CPU a float32 fit of small
        data, and float32 ``diag`` / ``spherical`` passes far from the mixture
        mean, run their EM passes in float64 (where that costs no more;
        :func:`gaussmix.expectation.float64_passes`); the parameters stay
        float32.
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
    prior : None, "default", True, mapping or ConjugatePrior, default=None
        R mclust's conjugate prior (``priorControl()``; Fraley & Raftery
        2007; :mod:`gaussmix.prior`): EM converges to the posterior mode,
        which keeps components from collapsing.  ``"default"`` (or True):
        mclust's ``defaultPrior`` from the data; a mapping or
        :class:`~gaussmix.prior.ConjugatePrior` overrides ``shrinkage``,
        ``mean``, ``dof`` or ``scale``.  Not for VEE, EVE, VVE, EVV (mclust
        has none).  The M-step is mclust's inside its EM (``me``, see
        :mod:`gaussmix.covariance.conjugate`); ``lower_bound_`` and the
        stopping rule use the data's log-likelihood, as mclust's.
        ``reg_covar`` is added to each component's scatter (``n_k *
        reg_covar`` on its diagonal): ``reg_covar=0`` gives mclust's
        numbers.  Sample weights count as copies.  Not with :meth:`partial_fit`.

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
    prior_ : PriorParams or None
        The conjugate prior's hyper-parameters of the fit (float64 tensors;
        :class:`~gaussmix.prior.PriorParams`), None without a prior.
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
        prior=None,
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
        self.prior = prior

    # ------------------------------------------------------------------ checks
    def _check_hyperparameters(self):
        """Raise a ValueError naming the parameter and its valid values."""
        self._check_common_hyperparameters()
        check_integer(self, "hc_subset", 2)
        if self.tol_type not in TOL_TYPES:
            raise ValueError(
                f"Invalid value for 'tol_type': {self.tol_type!r}. Use 'absolute' (scikit-learn's "
                f"change of the mean log-likelihood per sample) or 'relative' (mclust's relative "
                f"change of the total log-likelihood)."
            )
        check_prior(self.prior, self.covariance_type)

    @property
    def _relative_weights(self):
        # Under a prior the counts weigh against it: weights keep their scale.
        return ConjugatePrior.from_param(self.prior) is None

    def _prepare_fit(self, data, chunks, comm):
        """Resolve the conjugate prior's hyper-parameters (a pass over the data)."""
        spec = ConjugatePrior.from_param(self.prior)
        self.prior_ = None
        if spec is None:
            return
        mean, data_cov = self._data_moments(data, chunks, comm)
        n_total = float(comm.gather([data.weight_sum]).sum())
        cov = get_covariance_type(self.covariance_type)
        self.prior_ = spec.resolve(mean, data_cov, n_total, self.n_components,
                                   cov.prior_scale_shape(data.n_features))

    def _map_prior(self):
        p = getattr(self, "prior_", None)
        return None if p is None else p.to(self._device)

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

    # ------------------------------------------------------------------ fitting
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
            hc_subset=self.hc_subset, prior=self._map_prior(),
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
        check_checkpoint_arguments(checkpoint, checkpoint_every)

    def _stopping_rule(self) -> str:
        return self.tol_type

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
            **({"prior": prior_to_json(self.prior)} if self.prior is not None else {}),
        }

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
        if ConjugatePrior.from_param(self.prior) is not None:
            raise ValueError(
                "partial_fit does not support a prior: stepwise EM blends normalised statistics, "
                "while the prior weighs absolute counts. Use fit (on a source of batches for "
                "data that do not fit in memory), or prior=None."
            )
        if self.distributed:
            raise ValueError(
                "partial_fit does not support distributed=True; use fit on each rank's shard, or "
                "call partial_fit on one process."
            )
        check_in_memory(X, "partial_fit", "Call partial_fit once per batch, or fit(source) "
                        "for exact EM over the whole source.")
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
        # A small batch on the CPU: one torch thread (gaussmix.threads).
        with torch_threads(threads_for(n, Xt.device)):
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

    def _set_result(self, result: EMResult):
        params = result.params.to(device=self._device, dtype=self._dtype).with_covariances()
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
        # Set by _prepare_fit; results made without it (the search) had no prior.
        self.prior_ = getattr(self, "prior_", None)

    # ---------------------------------------------------------------- inference
    def _n_parameters(self):
        return self._params.n_parameters()

    def bic(self, X):
        """Bayesian information criterion on ``X`` (lower is better).

        ``-2 * log L + n_parameters * log(n_samples)``.  With a prior, ``L`` is
        the data's likelihood at the posterior mode and the parameter count
        is the usual one, as in mclust (whose BIC is minus this).
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
