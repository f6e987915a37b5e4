"""clammail.forked: a function run in a forked child, its result or exception taken back."""

from __future__ import annotations

import os

import numpy as np
import pytest

from clammail.forked import ChildFailed, ForkedCall
from clammail.signatures.common import SignatureError


def test_result_with_large_arrays_comes_back_whole():
    big = np.arange(3_000_000, dtype=np.uint64)  # 24 MB: more than a pipe holds

    def work():
        return {"keys": big * 2, "blob": b"x" * 100_000, "count": len(big)}

    value = ForkedCall(work).result()
    assert value["count"] == len(big)
    assert np.array_equal(value["keys"], big * 2)
    assert value["blob"] == b"x" * 100_000


def test_exception_is_raised_in_the_parent_with_its_details():
    def work():
        raise SignatureError("bad line", "/db/x.hdb", 7)

    with pytest.raises(SignatureError) as caught:
        ForkedCall(work).result()
    assert (caught.value.reason, caught.value.path, caught.value.line) == (
        "bad line", "/db/x.hdb", 7)
    assert str(caught.value) == "/db/x.hdb:7: bad line"


def test_a_child_that_dies_is_reported_as_failed():
    def work():
        os._exit(3)

    with pytest.raises(ChildFailed):
        ForkedCall(work).result()


def test_unpicklable_result_is_a_failure_not_a_hang():
    def work():
        return lambda: None

    with pytest.raises(ChildFailed):
        ForkedCall(work).result()


def test_abandon_ends_the_child():
    import time

    call = ForkedCall(lambda: time.sleep(60))
    started = time.monotonic()
    call.abandon()
    assert time.monotonic() - started < 10
