"""The build's collector policy raises the young threshold for the build only."""

from __future__ import annotations

import gc

import pytest

from knowledge.gcpolicy import BUILD_YOUNG_THRESHOLD, build_collection


def test_a_build_collects_less_often_and_restores_the_thresholds_even_on_error() -> None:
    before = gc.get_threshold()
    with build_collection():
        assert gc.get_threshold() == (max(before[0], BUILD_YOUNG_THRESHOLD), *before[1:])
    assert gc.get_threshold() == before
    with pytest.raises(RuntimeError), build_collection():
        raise RuntimeError("a step failed")
    assert gc.get_threshold() == before
