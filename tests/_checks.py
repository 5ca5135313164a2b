"""Shared assertion for errors that must name the problem and the remedy."""

import re

import pytest


def check_error(fn, problem, remedy):
    """Assert ``fn()`` raises a ValueError whose message matches both regexes."""
    with pytest.raises(ValueError) as info:
        fn()
    msg = str(info.value)
    assert re.search(problem, msg), f"problem {problem!r} not named in: {msg}"
    assert re.search(remedy, msg), f"remedy {remedy!r} missing in: {msg}"
