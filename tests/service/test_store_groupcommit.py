"""Group commit: concurrent callers share transactions, each gets its own result, a bad item fails alone."""

from __future__ import annotations

import threading
import time

from remediator.store.groupcommit import GroupCommit


def _run_concurrently(n, fn):
    results, errors = [None] * n, [None] * n
    start = threading.Barrier(n)

    def call(i):
        start.wait()
        try:
            results[i] = fn(i)
        except Exception as e:
            errors[i] = e

    threads = [threading.Thread(target=call, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results, errors


def test_concurrent_calls_share_commits_and_each_gets_its_own_result():
    groups: list[int] = []

    def write(items):
        groups.append(len(items))
        time.sleep(0.02)  # a commit's fsync: callers arriving meanwhile join the next group
        return [i * 10 for i in items]

    gc = GroupCommit(write)
    results, errors = _run_concurrently(24, gc.submit)
    assert errors == [None] * 24 and results == [i * 10 for i in range(24)]
    assert sum(groups) == 24 and len(groups) < 24


def test_a_failing_group_fails_every_caller_in_it_and_the_next_group_goes_on():
    def write(items):
        if 3 in items:
            raise RuntimeError("commit failed")
        return list(items)

    gc = GroupCommit(write)
    results, errors = _run_concurrently(8, gc.submit)
    assert isinstance(errors[3], RuntimeError)
    assert all(r == i or isinstance(e, RuntimeError) for i, (r, e) in enumerate(zip(results, errors)))
    assert gc.submit(5) == 5  # nothing left stuck


def test_a_lone_call_is_its_own_group():
    gc = GroupCommit(lambda items: [len(items)])
    assert gc.submit("x") == 1
