"""Collect a scikit-learn test module's tests into one of ours."""

import pytest


def collect(sk_tests, private, gaps=None):
    """Test functions of ``sk_tests``, marked skip (``private``) or xfail (``gaps``).

    Parameters
    ----------
    sk_tests : module
        scikit-learn's test module.
    private : dict
        Test name -> reason, for tests of scikit-learn's private helpers.
    gaps : dict, optional
        Test name -> reason, for known gaps; strict, so a fixed gap fails.

    Returns
    -------
    dict
        Test name -> test function, for the caller's ``globals()``.
    """
    out = {}
    for name in dir(sk_tests):
        fn = getattr(sk_tests, name)
        if not (name.startswith("test_") and callable(fn)):
            continue
        if name in private:
            fn = pytest.mark.skip(reason=private[name])(fn)
        elif name in (gaps or {}):
            fn = pytest.mark.xfail(reason=gaps[name], strict=True)(fn)
        out[name] = fn
    return out
