"""Group commit (app/engine/batching.py) with real threads: batches form under concurrency, every
caller gets its own answer, and one bad value fails only its own caller."""
from __future__ import annotations

import threading
import time

import pytest

from app.engine.batching import GroupCommit


def _run_threads(n, target):
    out, errors = [None] * n, [None] * n

    def one(i):
        try:
            out[i] = target(i)
        except Exception as exc:  # collected, asserted by the caller
            errors[i] = exc

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert not any(t.is_alive() for t in threads)
    return out, errors


def test_a_lone_submit_runs_at_once_in_its_own_batch():
    seen = []
    gc = GroupCommit(lambda values: seen.append(list(values)) or [v * 2 for v in values])
    assert gc.submit(21) == 42
    assert seen == [[21]] and gc.batches == 1


def test_concurrent_submits_share_batches_and_each_gets_its_own_result():
    batches = []

    def write_many(values):
        batches.append(list(values))
        time.sleep(0.01)  # a write in flight: the others queue behind it
        return [f"r{v}" for v in values]

    gc = GroupCommit(write_many, max_batch=16)
    out, errors = _run_threads(64, gc.submit)
    assert errors == [None] * 64
    assert out == [f"r{i}" for i in range(64)]
    assert sorted(v for b in batches for v in b) == list(range(64))  # each value written exactly once
    assert max(len(b) for b in batches) > 1 and all(len(b) <= 16 for b in batches)
    assert gc.items == 64 and gc.batches == len(batches) < 64


def test_a_failing_value_fails_only_its_caller():
    def write_many(values):
        time.sleep(0.005)
        if 13 in values:
            raise ValueError("13 is not storable")
        return values

    gc = GroupCommit(write_many)
    out, errors = _run_threads(40, gc.submit)
    assert isinstance(errors[13], ValueError) and "13" in str(errors[13])
    assert [e for i, e in enumerate(errors) if i != 13] == [None] * 39
    assert [o for i, o in enumerate(out) if i != 13] == [i for i in range(40) if i != 13]


def test_values_with_one_key_never_share_a_batch():
    batches = []

    def write_many(values):
        batches.append(list(values))
        time.sleep(0.005)
        return [True] * len(values)

    gc = GroupCommit(write_many, key=lambda v: v % 3)
    _out, errors = _run_threads(30, gc.submit)
    assert errors == [None] * 30
    assert all(len({v % 3 for v in b}) == len(b) for b in batches)
    assert sorted(v for b in batches for v in b) == list(range(30))


def test_a_result_count_mismatch_is_an_error_not_a_silent_none():
    gc = GroupCommit(lambda values: [])
    with pytest.raises(ValueError):
        gc.submit(1)


def test_a_failure_that_is_not_one_rows_fault_fails_the_batch_without_retrying_each():
    calls = []

    def write_many(values):
        calls.append(list(values))
        time.sleep(0.01)
        raise ConnectionError("the database is down")

    gc = GroupCommit(write_many, isolate=lambda exc: not isinstance(exc, ConnectionError))
    _out, errors = _run_threads(20, gc.submit)
    assert all(isinstance(e, ConnectionError) for e in errors)
    assert sum(len(c) for c in calls) == 20  # each value tried once, none alone a second time
