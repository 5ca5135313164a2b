"""What both mixture estimators share of scikit-learn's surface.

:class:`BaseMixture` holds the methods that read fitted parameters and are the
same for every model of a Gaussian mixture (``predict``, ``predict_proba``,
``score_samples``, ``score``, ``sample``, ``fit_predict``...): they run the
E-step of :mod:`gaussmix.em` under the fitted :class:`~gaussmix.params.GMMParams`
(a variational posterior is one, see :mod:`gaussmix.variational`), chunk by
chunk.  Fitting is :class:`~gaussmix.fitting.FitEngine`'s.
"""

from __future__ import annotations

import math
import numbers

import numpy as np
import torch
from sklearn.base import BaseEstimator, DensityMixin
from sklearn.utils.validation import check_is_fitted

from ._validation import to_output
from .chunk_workers import map_chunks, workers_for
from .data import check_in_memory, chunk_rows, is_source, iter_chunks
from .em import e_step
from .expectation import sample_log_likelihood
from .covariance import get_covariance_type
from .fitting import FitEngine
from .init import INIT_METHODS
from .params import GMMParams
from .threads import threads_for, torch_threads

__all__ = ["BaseMixture", "check_integer", "check_real"]


def check_integer(est, name: str, low: int) -> None:
    """Raise a ValueError unless ``est.<name>`` is an integer >= ``low``."""
    v = getattr(est, name)
    if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < low:
        raise ValueError(f"Invalid value for '{name}': {v!r}. It must be an integer >= {low}.")


def check_real(est, name: str, low: float = 0.0, strict: bool = False, optional: bool = False) -> None:
    """Raise a ValueError unless ``est.<name>`` is a finite number >= ``low``
    (> ``low`` when ``strict``; None also passes when ``optional``)."""
    v = getattr(est, name)
    if optional and v is None:
        return
    ok = not isinstance(v, bool) and isinstance(v, numbers.Real) and math.isfinite(v)
    if not ok or not (v > low if strict else v >= low):
        bound = f"> {low:g}" if strict else f">= {low:g}"
        also = "None or " if optional else ""
        raise ValueError(f"Invalid value for '{name}': {v!r}. It must be {also}a finite number {bound}.")


class BaseMixture(FitEngine, DensityMixin, BaseEstimator):
    """Base class of the mixture estimators: inference on fitted parameters.

    Subclasses set ``self._params`` (a :class:`~gaussmix.params.GMMParams`),
    ``_device``, ``_dtype`` and ``_tensor_io`` when fitted.
    """

    def _check_common_hyperparameters(self):
        """Raise a ValueError naming the parameter and its valid values, for the
        parameters both estimators have."""
        for name, low in (("n_components", 1), ("max_iter", 0), ("n_init", 1),
                          ("verbose_interval", 1)):
            check_integer(self, name, low)
        if not isinstance(self.verbose, (bool, np.bool_)):  # scikit-learn accepts True
            check_integer(self, "verbose", 0)
        check_real(self, "tol")
        check_real(self, "reg_covar")
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

    def _check_fitted(self):
        check_is_fitted(self, "_params")

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

    def _chunked(self, Xt, fn):
        # Small data on the CPU: one torch thread (gaussmix.threads); larger
        # data: the chunks shared among worker threads (gaussmix.chunk_workers).
        with torch_threads(threads_for(Xt.shape[0], Xt.device)):
            workers = workers_for(Xt.shape[0], Xt.device)
            rows = chunk_rows(Xt.shape[0], self.n_components, Xt.shape[1], Xt.device, Xt.dtype,
                              self.batch_size, workers=workers)
            return torch.cat(map_chunks(lambda c: fn(c[0]), iter_chunks(Xt, None, rows), workers))

    def _labels(self, Xt):
        return self._chunked(Xt, lambda xb: e_step(xb, self._params)[0].argmax(1))

    def _predict_input(self, X):
        self._check_fitted()
        check_in_memory(X, f"{type(self).__name__}'s methods after fit (predict, predict_proba, "
                        f"score, score_samples, bic, aic)", "Load the data into an array (np.load(path, "
                        "mmap_mode='r') for a .npy file) and pass that, or call them batch by "
                        "batch.")
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
        return self._chunked(Xt, lambda xb: sample_log_likelihood(xb, self._params))

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

        The file is a ``.npz`` archive of the parameter arrays (and, for a
        variational mixture, its posterior and priors) plus JSON metadata;
        loading it never unpickles and never runs code.  See
        :mod:`gaussmix.io`.

        Parameters
        ----------
        path : str or path-like
            Destination, conventionally ending in ``.npz``.
        """
        from .model_files import save_model

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
