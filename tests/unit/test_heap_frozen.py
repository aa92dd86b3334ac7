"""flows/runtime.py:old_heap_frozen: a cycle's collector skips the heap the cycle started with."""

from __future__ import annotations

import gc

from flows.runtime import old_heap_frozen


def test_the_heap_is_frozen_within_and_given_back_after() -> None:
    assert gc.get_freeze_count() == 0
    with old_heap_frozen():
        assert gc.get_freeze_count() > 0
    assert gc.get_freeze_count() == 0


def test_overlapping_cycles_share_one_freeze() -> None:
    """The first cycle to end must not thaw the heap of one still running."""
    first, second = old_heap_frozen(), old_heap_frozen()
    first.__enter__()
    second.__enter__()
    first.__exit__(None, None, None)
    assert gc.get_freeze_count() > 0
    second.__exit__(None, None, None)
    assert gc.get_freeze_count() == 0


def test_a_heap_frozen_by_the_process_itself_is_left_frozen() -> None:
    gc.freeze()
    try:
        frozen = gc.get_freeze_count()
        with old_heap_frozen():
            pass
        assert gc.get_freeze_count() == frozen
    finally:
        gc.unfreeze()


def test_an_error_in_the_cycle_still_thaws() -> None:
    try:
        with old_heap_frozen():
            raise RuntimeError("cycle failed")
    except RuntimeError:
        pass
    assert gc.get_freeze_count() == 0
