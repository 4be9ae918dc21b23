"""The webhook's group commit (remediator/web/ingest.py): concurrent posts share a transaction, each
gets its own records back only after the commit, and a failure stays with the posts it concerns."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

from remediator.store.base import StoreError
from remediator.web.ingest import WebhookCommits


class SlowCommit:
    """A commit that takes a while (as an fsync does), records its batches, and fails on request."""

    def __init__(self, fail_on: str | None = None, store_down: bool = False):
        self.batches: list[list[str]] = []
        self.fail_on, self.store_down = fail_on, store_down
        self.first_started = threading.Event()
        self.release = threading.Event()

    def __call__(self, alerts):
        self.batches.append(list(alerts))
        if len(self.batches) == 1:
            self.first_started.set()
            assert self.release.wait(120)
        if self.store_down:
            raise StoreError("database is locked")
        if self.fail_on in alerts:
            raise ValueError(f"cannot store {self.fail_on}")
        return [f"stored {a}" for a in alerts]


def submit_while_first_commits(commit: SlowCommit, posts: list[list[str]]):
    """Post posts[0], then the others while its commit runs; returns each post's result or error."""
    group = WebhookCommits(commit)

    def post(alerts):
        try:
            return group.submit(alerts)
        except Exception as err:  # noqa: BLE001 - the test looks at it
            return err
        except BaseException as err:  # noqa: BLE001 - Stop, below
            return err

    with ThreadPoolExecutor(len(posts)) as pool:
        first = pool.submit(post, posts[0])
        assert commit.first_started.wait(60)
        rest = [pool.submit(post, p) for p in posts[1:]]
        deadline = time.monotonic() + 60  # a loaded machine may take a while to run the threads
        while len(group._queue) < len(posts) - 1:  # every other post queued behind the first commit
            assert time.monotonic() < deadline, "the posts never queued behind the first commit"
            time.sleep(0.01)
        commit.release.set()
        return [first.result(60)] + [f.result(60) for f in rest]


def test_posts_during_a_commit_share_the_next_one_and_each_gets_its_own_records():
    commit = SlowCommit()
    results = submit_while_first_commits(commit, [["a"], ["b", "c"], ["d"], ["e"]])
    assert results == [["stored a"], ["stored b", "stored c"], ["stored d"], ["stored e"]]
    assert commit.batches[0] == ["a"]
    assert sorted(commit.batches[1]) == ["b", "c", "d", "e"]  # four posts, one transaction
    assert len(commit.batches) == 2


def test_a_store_failure_fails_every_post_of_the_batch():
    commit = SlowCommit(store_down=True)
    results = submit_while_first_commits(commit, [["a"], ["b"], ["c"]])
    assert all(isinstance(r, StoreError) for r in results)


def test_another_failure_is_retried_post_by_post_so_it_stays_with_its_own_post():
    commit = SlowCommit(fail_on="bad")
    results = submit_while_first_commits(commit, [["a"], ["b"], ["bad"], ["c"]])
    assert results[0] == ["stored a"] and results[1] == ["stored b"] and results[3] == ["stored c"]
    assert isinstance(results[2], ValueError)


def test_a_batch_is_capped_at_max_posts_and_the_rest_follows():
    commit = SlowCommit()
    group = WebhookCommits(commit, max_posts=2)
    with ThreadPoolExecutor(5) as pool:
        first = pool.submit(group.submit, ["a"])
        assert commit.first_started.wait(60)
        rest = [pool.submit(group.submit, [x]) for x in "bcde"]
        deadline = time.monotonic() + 60
        while len(group._queue) < 4:
            assert time.monotonic() < deadline, "the posts never queued behind the first commit"
            time.sleep(0.01)
        commit.release.set()
        assert [first.result(60)] + [f.result(60) for f in rest] == [["stored " + x] for x in "abcde"]
    assert [len(b) for b in commit.batches] == [1, 2, 2]


def test_many_concurrent_posts_lose_nothing(threads=8):
    stored: list[str] = []
    group = WebhookCommits(lambda alerts: (stored.extend(alerts), list(alerts))[1])
    with ThreadPoolExecutor(threads) as pool:
        results = list(pool.map(lambda i: group.submit([f"a{i}"]), range(2000)))
    assert results == [[f"a{i}"] for i in range(2000)]
    assert sorted(stored) == sorted(f"a{i}" for i in range(2000))


class Stop(BaseException):
    """Not an Exception (as KeyboardInterrupt or SystemExit): the leader does not catch it."""


class StopsTheSecondBatch(SlowCommit):
    def __call__(self, alerts):
        stored = super().__call__(alerts)
        if len(self.batches) == 2:
            raise Stop()
        return stored


def test_a_commit_interrupted_by_a_non_exception_fails_every_post_of_its_batch_none_left_waiting():
    commit = StopsTheSecondBatch()
    results = submit_while_first_commits(commit, [["a"], ["b"], ["c"], ["d"]])
    assert results[0] == ["stored a"]
    assert len(commit.batches) == 2  # b, c and d were one batch
    assert all(isinstance(r, Stop) for r in results[1:])  # an error each, never a silent empty answer
