"""Other Gaussian-mixture libraries, timed as ``bench.py`` times gaussmix.

Each timer runs ``n_iter`` EM iterations of one peer from the initial
parameters ``bench.fixed_init`` gives gaussmix and scikit-learn, in float32,
and returns the seconds per iteration and the mean log-likelihood per sample
at the final parameters (or None where the peer lacks the covariance type).
Peers that are not installed are skipped; none is a dependency of gaussmix.

- pomegranate (1.x, PyTorch): ``GeneralMixtureModel`` of ``Normal``
  distributions holding the start, ``tol=-inf`` so that it runs every
  iteration; full, diag and spherical (its "sphere").
- gmmx (JAX): ``EMFitter`` on ``GaussianMixtureModelJax.from_squeezed``; its
  loop is compiled on the first call, which is not timed; full and diag.
- torchgmm (PyTorch Lightning): ``GaussianMixture(init_means=...)`` takes
  the start's means only (it estimates the first covariances itself), so
  its log-likelihood is not from the same start; every type.  Its time per
  iteration is the difference of two fits, ``1 + n_iter`` and one
  iteration, divided by ``n_iter``: its set-up is left out, as gaussmix's.
"""

from __future__ import annotations

import importlib.util
import logging
import time
import warnings

import numpy as np

PEERS = ("pomegranate", "gmmx", "torchgmm")


def installed_peers() -> list:
    """The peers importable here, in :data:`PEERS` order."""
    return [name for name in PEERS if importlib.util.find_spec(name) is not None]


def _covariances(kind: str, precisions: np.ndarray) -> np.ndarray:
    """Covariances in each peer's shapes from ``fixed_init``'s precisions:
    (K, D, D) for full, (K, D) for diag, (K,) for spherical."""
    if kind == "full":
        return np.linalg.inv(precisions)
    return 1.0 / precisions


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def time_pomegranate(X: np.ndarray, k: int, kind: str, init, n_iter: int, device: str = "cpu"):
    """pomegranate's EM from ``init``: see :data:`TIMERS`."""
    import torch
    from pomegranate.distributions import Normal
    from pomegranate.gmm import GeneralMixtureModel

    names = {"full": "full", "diag": "diag", "spherical": "sphere"}
    if kind not in names:
        return None
    weights, means, precisions = init
    covs = _covariances(kind, precisions).astype(np.float32)
    dists = [Normal(means[j].astype(np.float32),
                    np.full(X.shape[1], covs[j], np.float32) if kind == "spherical" else covs[j],
                    covariance_type=names[kind]) for j in range(k)]
    model = GeneralMixtureModel(dists, priors=torch.tensor(weights, dtype=torch.float32),
                                max_iter=n_iter, tol=-np.inf).to(device)
    Xt = torch.from_numpy(X.astype(np.float32)).to(device)
    _sync(device)
    t = time.perf_counter()
    model.fit(Xt)
    _sync(device)
    dt = (time.perf_counter() - t) / n_iter
    with torch.no_grad():
        return dt, float(model.log_probability(Xt).mean())


def time_gmmx(X: np.ndarray, k: int, kind: str, init, n_iter: int, device: str = "cpu"):
    """gmmx's EM from ``init`` (compiled before timing): see :data:`TIMERS`."""
    if kind not in ("full", "diag"):
        return None
    import jax
    import jax.numpy as jnp
    from gmmx import EMFitter, GaussianMixtureModelJax

    weights, means, precisions = init
    with jax.default_device(jax.devices("gpu" if device.startswith("cuda") else "cpu")[0]):
        gmm = GaussianMixtureModelJax.from_squeezed(
            means=means.astype(np.float32),
            covariances=_covariances(kind, precisions).astype(np.float32),
            weights=weights.astype(np.float32), covariance_type=kind)
        # tol=-inf: every iteration runs (its loop stops when the change < tol).
        fitter = EMFitter(max_iter=n_iter, tol=-np.inf, reg_covar=1e-6)
        x = jnp.asarray(X.astype(np.float32))
        jax.block_until_ready(fitter.fit(x, gmm).gmm.means)  # compiles
        t = time.perf_counter()
        res = fitter.fit(x, gmm)
        jax.block_until_ready((res.gmm.means, res.log_likelihood))
        dt = (time.perf_counter() - t) / n_iter
        return dt, float(fitter.e_step(x, res.gmm)[0])


def time_torchgmm(X: np.ndarray, k: int, kind: str, init, n_iter: int, device: str = "cpu"):
    """torchgmm's EM from ``init``'s means: see :data:`TIMERS`."""
    import torch
    from torchgmm.bayes import GaussianMixture

    _, means, _ = init
    Xt = torch.from_numpy(X.astype(np.float32))
    start = torch.from_numpy(means.astype(np.float32))
    quiet = dict(enable_progress_bar=False, logger=False, enable_model_summary=False,
                 enable_checkpointing=False,
                 accelerator="gpu" if device.startswith("cuda") else "cpu", devices=1)

    def fit(iterations):
        est = GaussianMixture(k, covariance_type=kind, init_means=start, convergence_tolerance=0.0,
                              trainer_params=dict(max_epochs=iterations, **quiet))
        t = time.perf_counter()
        est.fit(Xt)
        return time.perf_counter() - t, est

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        level = logging.getLogger("lightning.pytorch").level
        logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
        try:
            one, _ = fit(1)
            many, est = fit(1 + n_iter)
            ll = -float(est.score(Xt))
        finally:
            logging.getLogger("lightning.pytorch").setLevel(level)
    return max(many - one, 0.0) / n_iter, ll


#: Each peer's timer, called as ``timer(X, k, kind, init, n_iter, device)``: ``X``
#: (N, D) float64 data (the peer gets a float32 copy), ``k`` components,
#: ``kind`` a covariance type as scikit-learn names it, ``init`` the
#: ``(weights, means, precisions)`` of ``bench.fixed_init``, ``n_iter`` EM
#: iterations timed, ``device`` "cpu" or "cuda".  It returns the seconds per iteration and the final mean
#: log-likelihood per sample, or None where the peer lacks ``kind``.
TIMERS = {"pomegranate": time_pomegranate, "gmmx": time_gmmx, "torchgmm": time_torchgmm}

#: Peers whose log-likelihood comes from another start than gaussmix's.
OWN_START = {"torchgmm"}
