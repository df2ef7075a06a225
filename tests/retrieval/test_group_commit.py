"""GroupCommit: concurrent submissions share one commit call; a failing group is retried item by item; a leader
gathers the writers announced as on their way."""

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


def _wait_for(predicate, what: str) -> None:
    """Until `predicate()` holds (bounded: a broken committer fails here, not hangs)."""
    deadline = time.monotonic() + 30
    while not predicate():
        assert time.monotonic() < deadline, what
        time.sleep(0.001)


def _announced_writer(group: GroupCommit, item: int, go: threading.Event, *, give_up: bool = False):
    """A thread that announces itself, waits for `go`, then submits `item` (or leaves without it)."""
    def run():
        try:
            with group.writing() as submit:
                assert go.wait(30)
                if give_up:
                    raise RuntimeError("preparing failed")
                submit(item)
        except RuntimeError:
            pass

    thread = threading.Thread(target=run)
    thread.start()
    return thread


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


def _two_announced(*, max_gather_s: float = 60, b_gives_up: bool = False):
    """A committer with a 30 s gather step, and two announced writers, A (item 1) and B (item 2), each waiting for
    its event: (committer, commit calls, A's event, B's event, A's thread, B's thread)."""
    calls: list[list[int]] = []
    group = GroupCommit(lambda items: calls.append(list(items)), gather_step_s=30, max_gather_s=max_gather_s)
    go_a, go_b = threading.Event(), threading.Event()
    a = _announced_writer(group, 1, go_a)
    b = _announced_writer(group, 2, go_b, give_up=b_gives_up)
    _wait_for(lambda: group._on_way == 2, "both writers announced")
    return group, calls, go_a, go_b, a, b


def test_a_leader_waits_for_a_writer_announced_as_on_its_way():
    group, calls, go_a, go_b, a, b = _two_announced()
    go_a.set()
    _wait_for(lambda: group.num_gathers == 1, "the first writer leads and waits for the second")
    assert calls == []
    go_b.set()  # its arrival wakes the leader at once (the 30 s step is never waited out)
    a.join(10)
    b.join(10)
    assert not a.is_alive() and not b.is_alive()
    assert calls == [[1, 2]], "one transaction for both"
    assert group.num_commits == 1 and group.num_committed == 2


def test_a_lone_writer_commits_without_waiting():
    calls: list[list[int]] = []
    group = GroupCommit(lambda items: calls.append(list(items)), gather_step_s=30, max_gather_s=60)
    with group.writing() as submit:
        submit(1)
    group.submit(2)  # not announced, nobody on the way
    assert calls == [[1], [2]]
    assert group.num_gathers == 0


def test_a_writer_that_gives_up_releases_the_leader():
    group, calls, go_a, go_b, a, b = _two_announced(b_gives_up=True)
    go_a.set()
    _wait_for(lambda: group.num_gathers == 1, "the first writer waits for the second")
    go_b.set()
    a.join(10)
    b.join(10)
    assert not a.is_alive(), "the withdrawal must end the wait, not the 30 s step"
    assert calls == [[1]]


def test_gathering_is_bounded():
    group, calls, go_a, go_b, a, b = _two_announced(max_gather_s=0.05)
    go_a.set()
    a.join(10)
    assert not a.is_alive() and calls == [[1]], "the leader commits once the bound is reached"
    go_b.set()
    b.join(10)
    assert calls == [[1], [2]]


def test_bad_gather_times_are_refused():
    with pytest.raises(ValueError, match="gather"):
        GroupCommit(lambda items: None, gather_step_s=-1)
