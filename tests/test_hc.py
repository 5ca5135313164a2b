"""Model-based hierarchical clustering (gaussmix.hc) against R's mclust and a
brute-force evaluation of the criterion.

The mclust numbers come from tests/reference/make_hc_reference.R (mclust's own
``hc``, ``hclass`` and ``dupPartition``); the brute force recomputes every
pair's cost from the cluster members at every step.
"""

import json
import math
import warnings
from pathlib import Path

import numpy as np
import pytest

from gaussmix import hc

REF = json.loads((Path(__file__).parent / "reference" / "mclust_hc_small.json").read_text())

# Relative difference of two merge costs below which they count as tied: our
# arithmetic and mclust's (LU/Cholesky against Givens rotations, and our SVD
# against R's) may then order them differently.
NEAR_TIE = 1e-12


class NearTieWarning(UserWarning):
    """Our merges and mclust's part at a (near) tie of the costs."""


def _pairs(x) -> np.ndarray:
    return np.asarray(x, dtype=np.int64).reshape(-1, 2)


def _first_difference(a: np.ndarray, b: np.ndarray):
    diff = np.flatnonzero((a != b).any(axis=1))
    return int(diff[0]) if diff.size else None


def assert_merges_match(X, ref_pairs, *, use, partition, criterion="mclust", what="",
                        strict=False):
    """Our merges equal ``ref_pairs``, or (unless ``strict``) first differ where
    our costs of the two competing merges are tied to ``NEAR_TIE`` (reported
    as a warning)."""
    tree = hc.hierarchical_merges(X, use, partition=partition, criterion=criterion)
    ref_pairs = _pairs(ref_pairs)
    assert tree.pairs.shape == ref_pairs.shape, what
    s = _first_difference(tree.pairs, ref_pairs)
    if s is None:
        return tree, None
    assert not strict, f"{what}: merge {s} is {tree.pairs[s].tolist()}, mclust's {ref_pairs[s].tolist()}"
    # Both sequences agree before merge s, so our run up to there is in the
    # state in which the reference chose differently.
    with hc._one_blas_thread():  # the same SVD, bit for bit, as the run
        Z, part, alpha = hc._prepare(X, use, partition)
    merger = hc._Merger(Z, part, alpha, mclust=criterion == "mclust")
    for _ in range(s):
        merger.step()
    ours = merger.pair_cost(*tree.pairs[s])
    theirs = merger.pair_cost(*ref_pairs[s])
    rel = abs(theirs - ours) / max(abs(ours), abs(theirs))
    assert rel <= NEAR_TIE, (
        f"{what}: merge {s} differs and is no tie: ours {tree.pairs[s].tolist()} "
        f"costs {ours!r}, the reference's {ref_pairs[s].tolist()} costs {theirs!r}"
    )
    warnings.warn(
        f"{what}: merges agree up to merge {s}, where ours {tree.pairs[s].tolist()} and "
        f"the reference's {ref_pairs[s].tolist()} are tied (relative cost difference "
        f"{rel:.1e}); the rest follows from that choice.",
        NearTieWarning,
    )
    return tree, s


def _data(name) -> np.ndarray:
    return np.asarray(REF[name]["X"], dtype=np.float64)


def _z(name) -> np.ndarray:
    return np.asarray(REF[name]["z"], dtype=np.float64)


def _singletons(name) -> np.ndarray:
    return np.arange(len(REF[name]["X"]))


WITH_DUPLICATES = ["faithful", "iris", "rand60"]
TRANSFORMED = ["faithful", "iris", "rand60", "blobs60"]


# --- the transformation and the initial partition ---------------------------

@pytest.mark.parametrize("name", TRANSFORMED)
def test_svd_transform_equals_mclust_z_up_to_column_signs(name):
    ours = hc.hc_transform(_data(name))
    z = _z(name)
    assert ours.shape == z.shape
    signs = np.sign(np.einsum("ij,ij->j", ours, z))
    np.testing.assert_allclose(ours * signs, z, rtol=0, atol=1e-12 * np.abs(z).max())


def test_std_transform_drops_constant_columns():
    rng = np.random.default_rng(0)
    X = np.column_stack([rng.normal(size=20), np.full(20, 3.0), rng.normal(5, 2, size=20)])
    expected = np.delete(X, 1, axis=1)
    expected = (expected - expected.mean(0)) / expected.std(0, ddof=1)
    np.testing.assert_allclose(hc.hc_transform(X, "STD"), expected, rtol=1e-13, atol=1e-13)
    assert hc.hc_transform(X, "SVD").shape == (20, 2)
    np.testing.assert_array_equal(hc.hc_transform(X, "vars"), X)


@pytest.mark.parametrize("name", WITH_DUPLICATES)
def test_duplicate_partition_equals_mclust(name):
    expected = np.asarray(REF[name]["dup_partition"])
    assert expected.max() < len(expected)  # the fixture does hold duplicates
    np.testing.assert_array_equal(hc.duplicate_partition(_data(name)), expected)
    tree = hc.hierarchical_merges(_data(name))
    np.testing.assert_array_equal(tree.initial_partition, expected)


# --- the merges against mclust's hc() ----------------------------------------

@pytest.mark.parametrize("start", ["z", "raw"])
@pytest.mark.parametrize("name", TRANSFORMED)
def test_merges_equal_mclust_from_single_rows(name, start):
    # R's hc(X, use = "SVD") as Mclust calls it: no partition, one row each.
    # From mclust's own z the transformation is out of play.
    X, use = (_z(name), "VARS") if start == "z" else (_data(name), "SVD")
    assert_merges_match(X, REF[name]["pairs"], use=use, partition=_singletons(name),
                        what=f"{name} from {start}")


@pytest.mark.parametrize("start", ["z", "raw"])
@pytest.mark.parametrize("name", WITH_DUPLICATES)
def test_merges_equal_mclust_from_duplicate_partition(name, start):
    ref = REF[name]
    if start == "z":
        X, use, part = _z(name), "VARS", ref["dup_partition"]
    else:
        X, use, part = _data(name), "SVD", None  # our default partition
    tree, _ = assert_merges_match(X, ref["dup_pairs"], use=use, partition=part,
                                  what=f"{name} (duplicates) from {start}")
    np.testing.assert_array_equal(tree.initial_partition, ref["dup_partition"])


def test_other_transformations_equal_mclust():
    X = _data("rand60")
    part = _singletons("rand60")
    assert_merges_match(X, REF["rand60"]["std_pairs"], use="STD", partition=part, what="STD")
    assert_merges_match(X, REF["rand60"]["vars_pairs"], use="VARS", partition=part, what="VARS")


def test_one_dimensional_data_equals_mclust():
    # p = 1: hcvvv scores two single points by the trace alone although 2 > p.
    # The eruption times repeat, so many costs tie exactly, and compute
    # identically in any IEEE arithmetic: the merges must equal mclust's.
    X = _data("faithful")[:, :1]
    assert_merges_match(X, REF["faithful_eruptions"]["pairs"], use="VARS",
                        partition=np.arange(len(X)), what="faithful eruptions", strict=True)


def test_exact_ties_are_broken_as_mclust_does():
    # A 5 x 4 integer grid: the first ten merges (neighbouring points) all
    # cost exactly the same, so their order is mclust's tie-breaking: the
    # last minimum in its storage order, and its moves of the last slot.
    # Later ties of merged clusters are decided by rounding, which differs.
    ref = _pairs(REF["grid"]["pairs"])
    X = _data("grid")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NearTieWarning)
        tree, s = assert_merges_match(X, ref, use="VARS", partition=np.arange(len(X)),
                                      what="grid")
    assert len(set(np.round(tree.costs[:10], 12))) == 1
    assert s is None or s >= 10
    np.testing.assert_array_equal(tree.pairs[:10], ref[:10])


def test_breast_cancer_equals_mclust():
    # mclust's wdbc features are scikit-learn's breast cancer data.
    from sklearn.datasets import load_breast_cancer

    X = load_breast_cancer().data
    ref = REF["breast_cancer"]
    np.testing.assert_allclose(X.sum(0), np.asarray(ref["column_sums"]).ravel(), rtol=1e-13)
    tree, _ = assert_merges_match(X, ref["pairs"], use="SVD", partition=np.arange(len(X)),
                                  what="breast cancer")
    cuts = tree.cut(range(2, 7))
    for k in range(2, 7):
        np.testing.assert_array_equal(cuts[k], np.asarray(ref["cuts"][str(k)]) - 1)


# --- mclust's stored triangular factor ----------------------------------------

def _exact_term(Y: np.ndarray, alpha: float, p: int, two_singletons: bool = False) -> float:
    n = Y.shape[0]
    if n == 1:
        return math.log(alpha)
    dev = Y - Y.mean(0)
    W = dev.T @ dev
    det = 0.0
    if n > p and not two_singletons:
        sign, logdet = np.linalg.slogdet(W / n)
        det = math.exp(logdet) if sign > 0 else 0.0
    return n * math.log(det + (np.trace(W) + alpha) / n)


@pytest.mark.parametrize("name, kind", [("faithful", "dup"), ("blobs60", "single")])
def test_exact_criterion_departs_from_mclust_where_its_stored_factor_counts(name, kind):
    # hcvvv stores a merged cluster's factor with every row a copy of its
    # first row.  On these data that changes a merge: mclust's choice there
    # is not the least increase of the criterion with the true scatters.
    ref = REF[name]
    Z = _z(name)
    part = np.asarray(ref["dup_partition"]) if kind == "dup" else np.arange(len(Z))
    stock = _pairs(ref["dup_pairs" if kind == "dup" else "pairs"])
    exact = hc.hierarchical_merges(Z, "VARS", partition=part, criterion="exact")
    mclust = hc.hierarchical_merges(Z, "VARS", partition=part, criterion="mclust")
    np.testing.assert_array_equal(mclust.pairs, stock)
    s = _first_difference(exact.pairs, stock)
    assert s is not None
    members = {lab: list(np.flatnonzero(exact.initial_partition == lab))
               for lab in range(1, exact.n_initial + 1)}
    for a, b in stock[:s]:
        members[a] += members.pop(b)
    _, _, alpha = hc._prepare(Z, "VARS", part)
    p = Z.shape[1]

    def cost(a, b):
        A, B = members[a], members[b]
        return (_exact_term(Z[A + B], alpha, p) - _exact_term(Z[A], alpha, p)
                - _exact_term(Z[B], alpha, p))

    ours, theirs = cost(*exact.pairs[s]), cost(*stock[s])
    assert ours < theirs - 1e-6 * abs(theirs)
    np.testing.assert_allclose(exact.costs[s], ours, rtol=1e-10)


@pytest.mark.parametrize("name", TRANSFORMED)
def test_exact_criterion_equals_mclust_with_its_stored_factor_fixed(name):
    # The fixture's "pairs_fixed": mclust's Fortran with the one line that
    # stores the factor corrected (written when MCLUST_SRC was set).
    ref = REF[name]
    if "pairs_fixed" not in ref:
        pytest.skip("fixture written without the corrected build (MCLUST_SRC)")
    Z = _z(name)
    assert_merges_match(Z, ref["pairs_fixed"], use="VARS", partition=np.arange(len(Z)),
                        criterion="exact", what=f"{name} fixed")
    if "dup_pairs_fixed" in ref:
        assert_merges_match(Z, ref["dup_pairs_fixed"], use="VARS",
                            partition=ref["dup_partition"], criterion="exact",
                            what=f"{name} (duplicates) fixed")


# --- brute force ----------------------------------------------------------------

def brute_force_merges(X: np.ndarray, partition: np.ndarray):
    """Every step: the cost of every pair from its members, O(n^3) slogdets.

    Labels: initial labels 1..g by first appearance; a cluster keeps the
    smallest label of its members.  As in hcvvv, two single points merge at
    their trace term (which matters for p = 1 only) and the cluster keeps the
    term it was merged at.
    """
    n, p = X.shape
    dev = X - X.mean(0)
    alpha = max(float((dev * dev).sum()) / (n * p), np.finfo(float).eps)
    labels = {}
    for i, lab in enumerate(partition.tolist()):
        labels.setdefault(lab, []).append(i)
    clusters = {k + 1: idx for k, idx in enumerate(labels.values())}
    term = {k: _exact_term(X[idx], alpha, p) for k, idx in clusters.items()}
    pairs, costs = [], []
    while len(clusters) > 1:
        best = None
        keys = sorted(clusters)
        for i, a in enumerate(keys):
            for b in keys[i + 1:]:
                A, B = clusters[a], clusters[b]
                joined = _exact_term(X[A + B], alpha, p, two_singletons=len(A) == len(B) == 1)
                c = joined - term[a] - term[b]
                if best is None or c < best[0]:
                    best = (c, a, b, joined)
        c, a, b, joined = best
        clusters[a] = clusters[a] + clusters.pop(b)
        term[a] = joined
        del term[b]
        pairs.append((a, b))
        costs.append(c)
    return np.array(pairs), np.array(costs)


def _blobs(seed, n, p):
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=3.0, size=(3, p))
    return centres[rng.integers(0, 3, size=n)] + rng.normal(size=(n, p)) * rng.uniform(0.3, 1.5, size=p)


@pytest.mark.parametrize("seed, n, p", [(0, 30, 2), (1, 30, 3), (2, 24, 1), (3, 28, 4)])
def test_exact_criterion_equals_brute_force(seed, n, p):
    X = _blobs(seed, n, p)
    expected_pairs, expected_costs = brute_force_merges(X, np.arange(n))
    tree = hc.hierarchical_merges(X, "VARS", partition=np.arange(n), criterion="exact")
    np.testing.assert_array_equal(tree.pairs, expected_pairs)
    np.testing.assert_allclose(tree.costs, expected_costs, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("p", [1, 2])
def test_exact_criterion_equals_brute_force_from_duplicate_partition(p):
    X = _blobs(4, 26, p)
    X[[5, 9, 17]] = X[2]
    X[20] = X[11]
    part = hc.duplicate_partition(X)
    assert part.max() == 22
    expected_pairs, expected_costs = brute_force_merges(X, part)
    tree = hc.hierarchical_merges(X, "VARS", criterion="exact")
    np.testing.assert_array_equal(tree.pairs, expected_pairs)
    np.testing.assert_allclose(tree.costs, expected_costs, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("name, use, dup", [("grid6x6", "VARS", False), ("grid", "VARS", False),
                                            ("eruptions", "VARS", False), ("rand60", "VARS", True),
                                            ("iris", "SVD", True)])
def test_each_merge_is_the_last_least_cost_in_mclust_storage_order(name, use, dup):
    # The per-column minima kept between merges against a full scan of the
    # cost matrix in hcvvv's order, pair (i, j), i < j, at (j-1)(j-2)/2 + i:
    # the merge taken is the last pair of least cost.  The exact ties of the
    # integer grids exercise the tie rule (the 6 x 6 one also where a merged
    # or moved cluster ties with a column's minimum).
    if name == "grid6x6":
        X = np.array([(i, j) for i in range(6) for j in range(6)], dtype=np.float64)
    elif name == "eruptions":
        X = _data("faithful")[:, :1]
    else:
        X = _data(name)
    partition = REF[name]["dup_partition"] if dup else np.arange(len(X))
    Z, part, alpha = hc._prepare(X, use, partition)
    merger = hc._Merger(Z, part, alpha)
    while merger.m > 1:
        m = merger.m
        C = merger.C[:m, :m]
        for k in range(1, m):
            col = C[:k, k]
            last = k - 1 - int(np.argmin(col[::-1]))
            assert merger.colmin[k] == col[last] and merger.colarg[k] == last, (m, k)
        i_idx, j_idx = np.triu_indices(m, 1)
        order = np.lexsort((i_idx, j_idx))  # storage order: by j, then i
        costs = C[i_idx[order], j_idx[order]]
        t = len(costs) - 1 - int(np.argmin(costs[::-1]))
        labels = sorted((merger.label[i_idx[order][t]], merger.label[j_idx[order][t]]))
        a, b, cost = merger.step()
        assert [a, b] == labels and cost == costs[t]


# --- cutting the tree ----------------------------------------------------------

@pytest.mark.parametrize("name", WITH_DUPLICATES)
def test_cuts_equal_hclass(name):
    ref = REF[name]
    single = hc.hierarchical_merges(_z(name), "VARS", partition=_singletons(name))
    dup = hc.hierarchical_merges(_z(name), "VARS", partition=ref["dup_partition"])
    for tree, key in ((single, "cuts"), (dup, "dup_cuts")):
        cuts = tree.cut(range(2, 7))
        assert sorted(cuts) == [2, 3, 4, 5, 6]
        for k in range(2, 7):
            expected = np.asarray(ref[key][str(k)]) - 1
            np.testing.assert_array_equal(cuts[k], expected, err_msg=f"{name} {key} {k}")
            np.testing.assert_array_equal(tree.labels(k), expected)


def test_cut_ends_and_many_ks_in_one_call():
    X = _blobs(5, 40, 2)
    X[7] = X[3]
    tree = hc.hierarchical_merges(X)
    g = tree.n_initial
    assert g == 39
    cuts = tree.cut([g, 1, 5, 5, 12])
    assert sorted(cuts) == [1, 5, 12, g]
    np.testing.assert_array_equal(cuts[1], np.zeros(40, dtype=np.int64))
    np.testing.assert_array_equal(cuts[g], tree.initial_partition - 1)
    for k, labels in cuts.items():
        assert labels.shape == (40,)
        assert set(labels.tolist()) == set(range(k))
        # numbered by first appearance
        _, first = np.unique(labels, return_index=True)
        assert np.all(np.diff(first) > 0)
        np.testing.assert_array_equal(labels, tree.labels(k))
    # coarser cuts merge whole clusters of finer ones
    for fine, coarse in ((12, 5), (5, 1)):
        for c in range(fine):
            assert len(set(cuts[coarse][cuts[fine] == c].tolist())) == 1


def test_tree_arrays_are_read_only():
    tree = hc.hierarchical_merges(_blobs(6, 12, 2))
    for arr in (tree.pairs, tree.initial_partition, tree.costs):
        with pytest.raises(ValueError):
            arr[0] = 0


# --- errors ---------------------------------------------------------------------

def test_errors_name_the_problem_and_the_remedy():
    X = _blobs(7, 10, 2)
    with pytest.raises(ValueError, match="finite"):
        hc.hierarchical_merges(np.where(np.arange(20).reshape(10, 2) == 3, np.nan, X))
    with pytest.raises(ValueError, match="finite"):
        hc.hc_transform(np.where(np.arange(20).reshape(10, 2) == 3, np.inf, X))
    with pytest.raises(ValueError, match="all rows of X are identical"):
        hc.hierarchical_merges(np.ones((5, 3)))
    with pytest.raises(ValueError, match="every column of X is constant"):
        hc.hc_transform(np.ones((5, 3)))
    with pytest.raises(ValueError, match="at least 2 rows"):
        hc.hierarchical_merges(X[:1])
    with pytest.raises(ValueError, match="2-D"):
        hc.hierarchical_merges(np.zeros((2, 2, 2)))
    with pytest.raises(ValueError, match="use must be one of"):
        hc.hierarchical_merges(X, use="PCS")
    with pytest.raises(ValueError, match="criterion"):
        hc.hierarchical_merges(X, criterion="fixed")
    with pytest.raises(ValueError, match="each of the 10 rows, got 9"):
        hc.hierarchical_merges(X, partition=np.arange(9))
    with pytest.raises(ValueError, match="one cluster"):
        hc.hierarchical_merges(X, partition=np.zeros(10))

    Xd = np.vstack([X[:4], X[:4], X[4:5]])  # 9 rows, 5 distinct
    tree = hc.hierarchical_merges(Xd)
    assert tree.n_initial == 5
    with pytest.raises(ValueError, match="hc needs at least 6 distinct rows .* got 5"):
        tree.labels(6)
    with pytest.raises(ValueError, match="at least 11 rows"):
        hc.hierarchical_merges(X).cut([2, 11])
    with pytest.raises(ValueError, match="at least 1, got 0"):
        tree.cut([0, 2])
