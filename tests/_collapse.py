"""Data on which one start collapses and another stays sound (both engines' tests)."""

import numpy as np
import torch

from gaussmix.scaling import feature_scaling


def collapse_case():
    """Standardised data: two clusters of 150 points and five copies of one
    point far from both, with two starting labellings for K = 3: ``far``
    gives the copies a component of their own (it collapses onto them: its
    variance falls to the regularisation and its log-likelihood climbs
    without bound); ``split`` puts them in the second cluster and splits the
    first by its first coordinate (a sound fit, far below the collapsed one).

    Returns
    -------
    X : Tensor (305, 2), far : Tensor (305,), split : Tensor (305,)
    """
    rng = np.random.default_rng(0)
    X = np.r_[rng.normal(size=(150, 2)), rng.normal(size=(150, 2)) + [6.0, 0.0],
              np.repeat([[3.0, 8.0]], 5, axis=0)]
    Xt = torch.from_numpy(X)
    Xz = feature_scaling(Xt, per_feature=True).to_fit(Xt)
    far = torch.from_numpy(np.r_[np.zeros(150), np.ones(150), 2 * np.ones(5)].astype(np.int64))
    split = far.clone()
    split[:150] = torch.from_numpy((X[:150, 0] > 0).astype(np.int64)) * 2
    split[300:] = 1
    return Xz, far, split
