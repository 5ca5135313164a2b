"""Built-in demonstration data with a known mixture structure."""

from __future__ import annotations

import numpy as np

__all__ = ["DEMO_TRUTH", "make_demo_data"]

#: The mixture the demo data are drawn from: three 2-D components with
#: different, rotated covariances (so the right model is K=3, "full").
DEMO_TRUTH = {
    "n_components": 3,
    "covariance_type": "full",
    "weights": [0.45, 0.35, 0.20],
    "means": [[0.0, 0.0], [6.0, 4.0], [-1.0, 7.0]],
    "covariances": [
        [[2.0, 1.2], [1.2, 1.5]],
        [[1.0, -0.7], [-0.7, 1.2]],
        [[0.4, 0.0], [0.0, 2.5]],
    ],
}


def make_demo_data(n_samples: int = 900, random_state: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Draw the demo data set from :data:`DEMO_TRUTH`.

    Parameters
    ----------
    n_samples : int, default=900
    random_state : int, default=0

    Returns
    -------
    X : ndarray of shape (n_samples, 2)
    labels : ndarray of shape (n_samples,)
        The component each point was drawn from.
    """
    rng = np.random.default_rng(random_state)
    w = np.asarray(DEMO_TRUTH["weights"])
    labels = rng.choice(len(w), size=n_samples, p=w)
    X = np.empty((n_samples, 2))
    for k, (m, c) in enumerate(zip(DEMO_TRUTH["means"], DEMO_TRUTH["covariances"])):
        idx = labels == k
        X[idx] = rng.multivariate_normal(m, c, size=int(idx.sum()))
    return X, labels
