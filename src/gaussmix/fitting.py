"""The fit engine shared by the estimators: data, restarts, checkpoints, ranks.

:class:`FitEngine` is what every estimator's ``fit`` runs: it validates the
data (in memory or a source of batches) and chunks it, checks that the ranks of
a distributed fit agree, draws the random stream, runs ``n_init``
initialisations of :func:`gaussmix.em.run_em` (resuming from and writing
checkpoints), keeps the best, and hands it to the estimator.  An estimator
supplies only what differs between models, as methods:

- ``_check_hyperparameters``, ``_check_scale_out_parameters``,
  ``_check_initial_parameters`` and ``_config_key``: its own parameters;
- ``_prepare_fit``: anything it needs from the data before initialising
  (a Bayesian mixture's data-dependent priors);
- ``_initialize``: initial parameters from the initialisation sample;
- ``_update_rule`` and ``_stopping_rule``: what replaces EM's M-step (``None``
  for EM itself) and which rule of :func:`gaussmix.stopping.has_converged`
  stops the loop;
- ``_map_prior``: the conjugate prior of EM's M-step (``None``: maximum
  likelihood);
- ``_set_result``: the fitted attributes from the best run.
"""

from __future__ import annotations

import functools
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
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils import check_random_state
from sklearn.utils.validation import validate_data

from ._validation import (
    as_tensor_2d,
    check_array_like,
    check_sample_weight,
    resolve_device,
    resolve_dtype,
)
from .checkpoint import FitCheckpoint
from .chunk_workers import workers_for
from .data import RESERVOIR_SIZE, as_source, chunk_rows, iter_chunks, reservoir_sample
from .distributed import Communicator
from .em import EMResult, run_em
from .expectation import float64_passes
from .feature_cache import MIN_ROWS, FeatureCache, keeps_features
from .guard import warn_if_reg_covar_dominates
from .owner_groups import start_settled
from .threads import threads_for_input, torch_threads
from .variational import data_moments

__all__ = ["FitEngine", "check_checkpoint_arguments"]


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


def check_checkpoint_arguments(checkpoint, checkpoint_every) -> None:
    """Raise a ValueError unless ``fit``'s checkpoint arguments are valid."""
    if checkpoint is not None and not isinstance(checkpoint, (str, os.PathLike)):
        raise ValueError(f"Invalid checkpoint {checkpoint!r}: pass a file path (str or os.PathLike) or None.")
    v = checkpoint_every
    if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < 1:
        raise ValueError(f"Invalid value for 'checkpoint_every': {v!r}. It must be an integer >= 1.")


def _torch_seed(random_state) -> int:
    """The generator seed of a ``random_state``: the first draw of its RandomState."""
    return int(check_random_state(random_state).randint(np.iinfo(np.int32).max))


#: :func:`_torch_seed` of an int, memoised: building a RandomState costs about
#: 0.3 ms, once per fit of a grid.
_int_torch_seed = functools.lru_cache(maxsize=256)(_torch_seed)


class FitEngine:
    """The fitting machinery that every mixture estimator shares (a mixin).

    See the module's description for the methods an estimator provides.
    """

    #: Whether only the relative sample weights matter to the fit (EM), so that
    #: they are rescaled to a safe range on input; a variational posterior
    #: depends on the absolute counts against its priors.
    _relative_weights = True

    def _prepare_fit(self, data, chunks, comm):
        """Hook: called once per fit, after the data are validated and before
        any initialisation; ``chunks()`` is one pass over the local data."""

    def _update_rule(self):
        """Hook: the update that replaces EM's M-step (None: EM itself)."""
        return None

    def _stopping_rule(self) -> str:
        """Hook: the ``tol_type`` of :func:`gaussmix.stopping.has_converged`."""
        return "absolute"

    def _map_prior(self):
        """Hook: the :class:`~gaussmix.prior.PriorParams` of EM's M-step (None:
        maximum likelihood)."""
        return None

    def _data_moments(self, data, chunks, comm):
        """The data's weighted mean and covariance (one pass; every rank's
        totals summed), for priors whose defaults come from the data."""
        X, w = data.init_X, data.init_w

        def center():
            c = X.mean(0) if w is None else (w.unsqueeze(1) * X).sum(0) / w.sum()
            return c.to(device="cpu")

        # Every rank takes its moments around the same point, so they add up.
        c = comm.from_root(center, "initialising").to(device=data.device)
        return data_moments(chunks(), c, comm.reduce_stats if comm.enabled else None)

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

    def _make_generator(self, device):
        rs = self.random_state
        integral = isinstance(rs, numbers.Integral) and not isinstance(rs, bool)
        seed = _int_torch_seed(int(rs)) if integral else _torch_seed(rs)
        gen_device = device if device.type == "cuda" else torch.device("cpu")
        gen = torch.Generator(device=gen_device)
        gen.manual_seed(seed)
        return gen

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
            w = (check_sample_weight(sample_weight, n, device, dtype,
                                     rescale=self._relative_weights) if n > 0 else None)
            kept = False
            if self.batch_size is None and n >= MIN_ROWS:  # the centre's pass only where it may pay
                centre = Xt.mean(0, dtype=torch.float64)
                kept = keeps_features(Xt, centre)
            workers = workers_for(n, device)
            rows = chunk_rows(n, self.n_components, d, device, dtype, self.batch_size,
                              self.covariance_type, kept_features=kept, workers=workers)

            def chunks():
                return iter_chunks(Xt, w, rows)

            if kept:
                # Views of Xt, the same every pass.
                chunks.feature_cache = FeatureCache(centre)
            # In memory: each pass deals its chunks out to worker threads.
            chunks.workers = workers
            chunks.float64_passes = not comm.enabled and float64_passes(
                n, self.n_components, d, dtype, device)

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
                f"X has {d} features, but {type(self).__name__} is expecting {self.n_features_in_} "
                f"features as input."
            )
        if not comm.enabled and n < max(2, self.n_components):
            raise ValueError(
                f"Expected n_samples >= max(2, n_components) but got n_components = "
                f"{self.n_components}, n_samples = {n}. Use fewer components or more data."
            )
        rows = chunk_rows(n, self.n_components, d, device, dtype, self.batch_size,
                          self.covariance_type)
        src.set_rows(rows)
        return SimpleNamespace(
            Xt=None, device=device, dtype=dtype, n_samples=n, n_features=d,
            weight_sum=summary.weight_sum, chunks=src, rows=rows, init_X=summary.sample, init_w=None,
            fingerprint=lambda: summary.feature_sumsq, tensor_io=isinstance(first, torch.Tensor),
        )

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
                    f"The ranks constructed {type(self).__name__} with different parameters (or dtypes, "
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
        # Small data on the CPU: one torch thread (gaussmix.threads).
        with torch_threads(threads_for_input(X, self.device)):
            return self._fit_threaded(X, sample_weight, checkpoint, checkpoint_every)

    def _fit_threaded(self, X, sample_weight, checkpoint, checkpoint_every):
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
        self._prepare_fit(data, chunks, comm)

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

        # Owner groups (gaussmix.owner_groups) depend on the fit's history:
        # their state goes into each checkpoint and starts empty for each init.
        cache = getattr(getattr(data, "chunks", None), "feature_cache", None)

        def save(*args):
            if ckpt is None or not comm.is_root:
                return
            try:
                ckpt.save(*args, (None, None) if cache is None else cache.owner_state())
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
            if cache is not None:
                cache.restore_owner(*(state["owner"] if resumed else (None, None)))
            if resumed:
                current = _move_result(state["current"], device, dtype)
                if gen is not None and state["generator_state"] is not None:
                    gen.set_state(state["generator_state"].to(gen.get_state().device))
                self._resumed_from_ = (init, current.n_iter)
            elif do_init:
                current = EMResult(share(lambda: self._initialize_root(data, gen, rows, user)), False, 0, -math.inf, [])
                if cache is not None and self.init_params == "kmeans" and user[1] is None:
                    start_settled(cache, current.params)
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
                    max_iter=self.max_iter, lower_bound=lower_bound, tol_type=self._stopping_rule(),
                    update=self._update_rule(), prior=self._map_prior(),
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
