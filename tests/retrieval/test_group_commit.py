"""GroupCommit: concurrent submissions share one commit call; a failing group is retried item by item."""

import threading
import time

import pytest

from ragsvc.retrieval.group_commit import GroupCommit


def _wait_queued(group: GroupCommit, n: int) -> None:
    """Until `n` submissions wait in the queue (bounded: a broken committer fails here, not hangs)."""
    deadline = time.monotonic() + 30
    while len(group._queue) < n:
        assert time.monotonic() < deadline, f"{len(group._queue)} of {n} submissions queued"
        time.sleep(0.001)


def test_lone_submit_commits_at_once():
    calls: list[list[int]] = []
    group = GroupCommit(lambda items: calls.append(list(items)))
    group.submit(1)
    group.submit(2)
    assert calls == [[1], [2]]
    assert group.num_commits == 2


def test_submissions_waiting_behind_a_commit_share_the_next_one():
    calls: list[list[int]] = []
    release = threading.Event()
    first_started = threading.Event()

    def commit(items):
        calls.append(list(items))
        if len(calls) == 1:
            first_started.set()
            assert release.wait(30)

    group = GroupCommit(commit)
    threads = [threading.Thread(target=group.submit, args=(0,))]
    threads[0].start()
    assert first_started.wait(30)
    for i in range(1, 6):
        threads.append(threading.Thread(target=group.submit, args=(i,)))
        threads[-1].start()
    _wait_queued(group, 5)
    release.set()
    for t in threads:
        t.join(30)
    assert calls[0] == [0]
    assert sorted(calls[1]) == [1, 2, 3, 4, 5] and len(calls) == 2, "five waiting writers, one transaction"
    assert group.num_commits == 2


def test_a_failing_group_fails_only_the_bad_item():
    calls: list[list[int]] = []
    release = threading.Event()
    first_started = threading.Event()

    def commit(items):
        calls.append(list(items))
        if len(calls) == 1:
            first_started.set()
            assert release.wait(30)
        if 13 in items:
            raise ValueError("bad batch 13")

    group = GroupCommit(commit)
    errors: dict[int, BaseException | None] = {}

    def submit(i):
        try:
            group.submit(i)
            errors[i] = None
        except ValueError as exc:
            errors[i] = exc

    threads = [threading.Thread(target=submit, args=(0,))]
    threads[0].start()
    assert first_started.wait(30)
    for i in (1, 13, 2):
        threads.append(threading.Thread(target=submit, args=(i,)))
        threads[-1].start()
    _wait_queued(group, 3)
    release.set()
    for t in threads:
        t.join(30)
    assert errors[0] is None and errors[1] is None and errors[2] is None
    assert isinstance(errors[13], ValueError)
    committed = [c for c in calls if 13 not in c]
    assert sorted(i for c in committed for i in c) == [0, 1, 2], "each good item committed exactly once"


def test_group_size_is_bounded():
    calls: list[list[int]] = []
    release = threading.Event()
    first_started = threading.Event()

    def commit(items):
        calls.append(list(items))
        if len(calls) == 1:
            first_started.set()
            assert release.wait(30)

    group = GroupCommit(commit, max_group=2)
    threads = [threading.Thread(target=group.submit, args=(i,)) for i in range(6)]
    threads[0].start()
    assert first_started.wait(30)
    for t in threads[1:]:
        t.start()
    _wait_queued(group, 5)
    release.set()
    for t in threads:
        t.join(30)
    assert all(len(c) <= 2 for c in calls)
    assert sorted(i for c in calls for i in c) == list(range(6))


def test_bad_bound_is_refused():
    with pytest.raises(ValueError, match="max_group"):
        GroupCommit(lambda items: None, max_group=0)
