"""EmbedBatcher: concurrent embeddings share forward passes and get the vectors they would alone."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import numpy as np
import pytest

from ragsvc.retrieval.embed_batcher import (
    BatchedEmbedder,
    EmbedBatcher,
    ModelLock,
    lanes_for,
    threads_per_lane,
)

QUERIES = [f"question number {i} about topic {i % 4}" for i in range(16)]


class CountingEmbedder:
    """The real MiniLM, with each batched call's size recorded and the first call held until released."""

    def __init__(self, real, hold_first: threading.Event | None = None, fail: bool = False) -> None:
        self.real, self.id, self.dim = real, real.id, real.dim
        self.calls: list[int] = []
        self.hold_first, self.fail = hold_first, fail
        self.first_started = threading.Event()

    def embed_queries(self, texts, held=None):
        self.calls.append(len(texts))
        if len(self.calls) == 1 and self.hold_first is not None:
            self.first_started.set()
            assert self.hold_first.wait(60)
        if self.fail:
            raise RuntimeError("model exploded")
        return self.real.embed_queries(texts)


def _one(batcher: EmbedBatcher, text: str) -> np.ndarray:
    return batcher.embed([text])[0]


def _wait_for(condition, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():  # polls a condition; the bound only ends a broken run
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.001)


def test_queries_queued_during_a_pass_share_the_next_one_and_get_their_own_vectors(minilm):
    release = threading.Event()
    embedder = CountingEmbedder(minilm, hold_first=release)
    batcher = EmbedBatcher(embedder.embed_queries)
    with ThreadPoolExecutor(16) as pool:
        first = pool.submit(_one, batcher, QUERIES[0])
        assert embedder.first_started.wait(60)
        rest = [pool.submit(_one, batcher, q) for q in QUERIES[1:]]
        _wait_for(lambda: len(batcher._queue) == 15)
        release.set()
        vectors = [first.result()] + [f.result() for f in rest]
    assert embedder.calls == [1, 15]
    alone = np.stack([minilm.embed_query(q) for q in QUERIES])
    np.testing.assert_allclose(np.stack(vectors), alone, atol=1e-5)


def test_batches_are_capped_and_a_lone_query_is_embedded_at_once(minilm):
    release = threading.Event()
    embedder = CountingEmbedder(minilm, hold_first=release)
    batcher = EmbedBatcher(embedder.embed_queries, max_batch=4)
    with ThreadPoolExecutor(16) as pool:
        first = pool.submit(_one, batcher, QUERIES[0])
        assert embedder.first_started.wait(60)
        rest = [pool.submit(_one, batcher, q) for q in QUERIES[1:11]]
        _wait_for(lambda: len(batcher._queue) == 10)
        release.set()
        for f in [first, *rest]:
            f.result()
    assert embedder.calls == [1, 4, 4, 2]
    _one(batcher, "alone")
    assert embedder.calls[-1] == 1 and batcher.num_passes == 0


def test_a_failing_pass_fails_every_query_in_it_and_the_batcher_recovers(minilm):
    embedder = CountingEmbedder(minilm, fail=True)
    batcher = EmbedBatcher(embedder.embed_queries)
    with ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(_one, batcher, q) for q in QUERIES[:8]]
        for f in futures:
            with pytest.raises(RuntimeError, match="model exploded"):
                f.result()
    embedder.fail = False
    assert _one(batcher, "fine now").shape == (minilm.dim,)


def test_with_a_lane_to_hold_a_pass_takes_what_queued_while_it_waited(minilm):
    """A document pass waiting for its lane (busy with a search, say) takes its texts only once it holds it."""
    lane = threading.Lock()
    embedder = CountingEmbedder(minilm)
    batcher = EmbedBatcher(embedder.embed_queries, max_passes=2, hold=lambda: lane, take_when_held=True)
    with ThreadPoolExecutor(8) as pool:
        with lane:  # busy
            futures = [pool.submit(_one, batcher, q) for q in QUERIES[:6]]
            _wait_for(lambda: len(batcher._queue) == 6 and batcher.num_passes == 2)  # two wait, nothing taken
        vectors = np.stack([f.result() for f in futures])
    assert embedder.calls == [6], "the first pass to get the lane took all six; the other found none left"
    np.testing.assert_allclose(vectors, np.stack([minilm.embed_query(q) for q in QUERIES[:6]]), atol=1e-5)


def test_a_query_pass_takes_its_texts_before_it_waits_for_its_lane(minilm):
    """Query passes keep the batch they had when they claimed a slot: taking more while a lane frees would only
    pad short queries to longer ones in one bigger pass."""
    lane = threading.Lock()
    embedder = CountingEmbedder(minilm)
    batcher = EmbedBatcher(embedder.embed_queries, max_passes=2, hold=lambda: lane)
    with ThreadPoolExecutor(2) as pool:
        with lane:  # busy
            future = pool.submit(_one, batcher, QUERIES[0])
            _wait_for(lambda: batcher.num_passes == 1 and not batcher._queue)  # taken while the lane is busy
        vector = future.result()
    assert embedder.calls == [1]
    np.testing.assert_allclose(vector, minilm.embed_query(QUERIES[0]), atol=1e-5)


def test_texts_taken_by_a_pass_still_waiting_for_its_lane_count_as_queued(minilm):
    """Between taking its texts and holding its lane a query pass is urgent work on its way: `has_queued` stays
    True until the lane is held, so a document pass woken in that moment does not take the lane first; once held
    (and after the pass, or a failed `hold`) nothing is left queued."""
    seen: list[bool] = []
    lane = threading.Lock()
    batcher: EmbedBatcher

    @contextmanager
    def hold():
        seen.append(batcher.has_queued)  # the texts are taken, the lane not yet asked for
        with lane:
            yield None
            seen.append(batcher.has_queued)

    embedder = CountingEmbedder(minilm)
    batcher = EmbedBatcher(embedder.embed_queries, hold=hold)
    np.testing.assert_allclose(_one(batcher, QUERIES[0]), minilm.embed_query(QUERIES[0]), atol=1e-5)
    assert seen == [True, False] and not batcher.has_queued

    @contextmanager
    def broken():
        raise RuntimeError("no lane")
        yield

    failing = EmbedBatcher(embedder.embed_queries, hold=broken)
    with pytest.raises(RuntimeError, match="no lane"):
        _one(failing, QUERIES[1])
    assert not failing.has_queued and failing.num_passes == 0


def test_batched_embedder_documents_match_the_model_and_keep_request_boundaries(minilm):
    batched = BatchedEmbedder(minilm)
    requests = [[f"doc {i} part {j}: some words about subject {i}" for j in range(1 + i % 3)] for i in range(12)]
    with ThreadPoolExecutor(12) as pool:
        got = list(pool.map(batched.embed_documents, requests))
    for texts, vectors in zip(requests, got, strict=True):
        np.testing.assert_allclose(vectors, minilm.embed_documents(texts), atol=1e-5)
    assert batched.max_seq_length == minilm.max_seq_length and batched.id == minilm.id
    np.testing.assert_allclose(batched.embed_query("a query"), minilm.embed_query("a query"), atol=1e-5)


def test_model_lock_lets_waiting_queries_go_first_but_at_most_max_overtakes_times():
    lock = ModelLock(max_overtakes=2)
    order: list[str] = []
    first_held, release_first = threading.Event(), threading.Event()

    def hold(name: str, urgent: bool) -> None:
        with lock.hold(urgent=urgent):
            order.append(name)
            if name == "first":
                first_held.set()
                assert release_first.wait(60)

    with ThreadPoolExecutor(8) as pool:
        pool.submit(hold, "first", False)
        assert first_held.wait(60)
        pool.submit(hold, "ingest", False)
        _wait_for(lambda: lock._waiting[False] == 1)
        for i in range(4):
            pool.submit(hold, f"search{i}", True)
        _wait_for(lambda: lock._waiting[True] == 4)
        release_first.set()
    kinds = ["ingest" if n == "ingest" else "search" for n in order[1:]]
    assert kinds == ["search", "search", "ingest", "search", "search"]
    with lock.hold(urgent=False):  # a lone holder of either kind takes it at once
        pass
    assert lock.num_free == lock.lanes == 1 and lock._waiting == {True: 0, False: 0}


def test_model_lock_lets_queued_queries_go_first_within_the_same_bound():
    """Query texts queued for a pass that has not asked for a lane yet keep a document pass off a free lane;
    each urgent grant makes the waiting document pass look again, and after `max_overtakes` of them it goes
    even though queries are still queued."""
    queued = [True]
    lock = ModelLock(max_overtakes=2, urgent_queued=lambda: queued[0])
    order: list[str] = []
    ingest_started = threading.Event()

    def ingest() -> None:
        ingest_started.set()
        with lock.hold(urgent=False):
            order.append("ingest")

    with ThreadPoolExecutor(1) as pool:
        waiting = pool.submit(ingest)
        assert ingest_started.wait(60)
        _wait_for(lambda: lock._waiting[False] == 1)
        assert lock.num_free == 1 and order == []  # a free lane, held back for the queued queries
        with lock.hold(urgent=True):  # the queued pass asks for its lane: it goes first
            order.append("search0")
        assert order == ["search0"] and lock._waiting[False] == 1
        with lock.hold(urgent=True):
            order.append("search1")
        waiting.result(timeout=60)  # two overtakes: the ingest is due although queries are still queued
    assert order == ["search0", "search1", "ingest"]
    queued[0] = False
    with lock.hold(urgent=False):  # nothing queued: a lone document pass takes the lane at once
        pass


class CountingDocuments(CountingEmbedder):
    """CountingEmbedder whose document passes are recorded too, as "documents" among the query pass sizes."""

    def embed_documents(self, texts, progress=False):
        self.calls.append("documents")  # type: ignore[arg-type]
        return self.real.embed_documents(texts)


def test_a_document_pass_waits_for_queries_queued_behind_a_running_pass(minilm):
    """Through BatchedEmbedder: while a query pass runs on the only lane, more queries queue (they wait for
    a pass slot, not yet for the lane), and the lane lock counts them as urgent work on its way; an ingest
    arriving then embeds after them."""
    release = threading.Event()
    inner = CountingDocuments(minilm, hold_first=release)
    batched = BatchedEmbedder(inner)
    with ThreadPoolExecutor(4) as pool:
        first = pool.submit(batched.embed_query, QUERIES[0])
        assert inner.first_started.wait(60)
        later = [pool.submit(batched.embed_query, q) for q in QUERIES[1:3]]
        _wait_for(lambda: len(batched._queries._queue) == 2)
        assert batched._model_lock._urgent_queued() and batched._model_lock._waiting[True] == 0
        ingest = pool.submit(batched.embed_documents, ["a passage to store"])
        _wait_for(lambda: batched._model_lock._waiting[False] == 1)
        release.set()
        for future in (first, *later, ingest):
            future.result(timeout=60)
    assert inner.calls == [1, 2, "documents"] and not batched._model_lock._urgent_queued()


class HeldDocuments:
    """The real MiniLM; each document call's size is recorded, and the first one held until released."""

    def __init__(self, real, release: threading.Event) -> None:
        self.real, self.id, self.dim, self.release = real, real.id, real.dim, release
        self.calls: list[tuple[str, int]] = []
        self.first_started = threading.Event()

    def embed_documents(self, texts, progress=False):
        self.calls.append(("documents", len(texts)))
        if len(self.calls) == 1:
            self.first_started.set()
            assert self.release.wait(60)
        return self.real.embed_documents(texts)

    def embed_queries(self, texts, held=None):
        self.calls.append(("queries", len(texts)))
        return self.real.embed_queries(texts)


def test_a_large_ingest_embeds_in_slices_and_a_search_goes_between_them(minilm):
    release = threading.Event()
    inner = HeldDocuments(minilm, release)
    batched = BatchedEmbedder(inner)
    texts = [f"passage {i}: " + "word " * (i % 7) for i in range(100)]
    with ThreadPoolExecutor(2) as pool:
        ingest = pool.submit(batched.embed_documents, texts)
        assert inner.first_started.wait(60)
        search = pool.submit(batched.embed_query, "a query while the ingest embeds")
        _wait_for(lambda: batched._model_lock._waiting[True] == 1)
        release.set()
        vectors, query = ingest.result(), search.result()
    assert inner.calls == [("documents", 64), ("queries", 1), ("documents", 36)]
    np.testing.assert_allclose(vectors, minilm.embed_documents(texts), atol=1e-5)
    np.testing.assert_allclose(query, minilm.embed_query("a query while the ingest embeds"), atol=1e-5)


class HeldQueries:
    """A real MiniLM copy whose query passes wait for `release` once `hold` is set, recording each pass."""

    def __init__(self, name: str, calls: list[tuple[str, int]], release: threading.Event) -> None:
        from ragsvc.embed.embedder import SentenceTransformerEmbedder

        self.real = SentenceTransformerEmbedder()
        self.name, self.id, self.dim, self.calls, self.release = name, self.real.id, self.real.dim, calls, release
        self.hold = threading.Event()
        self.started = threading.Event()

    def embed_queries(self, texts, held=None):
        self.calls.append((self.name, len(texts)))
        if self.hold.is_set():
            self.started.set()
            assert self.release.wait(60)
        return self.real.embed_queries(texts)

    def count_tokens(self, text):
        self.calls.append((self.name, -1))
        return self.real.count_tokens(text)


@pytest.fixture(scope="module")
def two_lanes():
    calls: list[tuple[str, int]] = []
    release = threading.Event()
    first, second = HeldQueries("first", calls, release), HeldQueries("second", calls, release)
    return BatchedEmbedder(first, replicas=[second]), first, second, calls, release


def test_with_two_lanes_a_search_runs_on_the_other_copy_while_one_pass_is_held(minilm, two_lanes):
    batched, first, second, calls, release = two_lanes
    before = len(calls)  # the copies are shared by this module's two-lane tests, which may run first
    for lane in (first, second):
        lane.hold.set()
    with ThreadPoolExecutor(4) as pool:
        held = pool.submit(batched.embed_query, QUERIES[0])
        _wait_for(lambda: first.started.is_set() or second.started.is_set())
        busy, free = (first, second) if first.started.is_set() else (second, first)
        busy.hold.clear()  # the held pass stays held; further passes on that copy would run
        free.hold.clear()
        other = pool.submit(batched.embed_query, QUERIES[1])
        assert other.result(timeout=60) is not None  # finished while the first pass is still held
        assert batched.count_tokens("tokens on the free copy") > 0  # token counting takes the free lane too
        assert not held.done()
        release.set()
        vectors = np.stack([held.result(), other.result()])
    assert [name for name, _ in calls[before + 1 :]] == [free.name, free.name]
    np.testing.assert_allclose(vectors, np.stack([minilm.embed_query(q) for q in QUERIES[:2]]), atol=1e-5)
    assert batched._model_lock.num_free == 2 and batched._queries.num_passes == 0


def test_token_counting_takes_no_lane_when_the_model_counts_with_its_own_tokenizer(minilm):
    batched = BatchedEmbedder(minilm)
    text = "Load note: an ingest's chunker counts tokens while every lane runs a pass."
    assert minilm.tokenizes_privately
    with ThreadPoolExecutor(1) as pool, batched._model_lock.hold(urgent=True):  # the only lane, busy
        # A count that waited for the lane would time out here; the lane is then freed before the pool joins.
        offsets = pool.submit(batched.token_offsets, text).result(timeout=30)
        count = pool.submit(batched.count_tokens, text).result(timeout=30)
        assert batched._model_lock._waiting == {True: 0, False: 0}
    assert offsets == minilm.token_offsets(text) and count == len(offsets) > 0


def test_two_lanes_give_every_concurrent_caller_its_own_vectors(minilm, two_lanes):
    batched = two_lanes[0]
    with ThreadPoolExecutor(16) as pool:
        vectors = list(pool.map(batched.embed_query, QUERIES))
    np.testing.assert_allclose(np.stack(vectors), np.stack([minilm.embed_query(q) for q in QUERIES]), atol=1e-5)


def test_a_copy_of_another_model_is_refused(minilm):
    class Other:
        id, dim = "other-384", 384

    with pytest.raises(ValueError, match="same embed settings"):
        BatchedEmbedder(minilm, replicas=[Other()])


def test_lanes_and_threads_default_to_the_cores():
    assert [lanes_for(0, cores) for cores in (1, 2, 16)] == [1, 2, 4]
    assert lanes_for(3, 2) == 3
    assert threads_per_lane(0, lanes=1, num_cores=2) == 0  # one lane: torch's own choice
    assert threads_per_lane(0, lanes=2, num_cores=2) == 1
    assert threads_per_lane(0, lanes=4, num_cores=2) == 1
    assert threads_per_lane(3, lanes=2, num_cores=2) == 3
    with pytest.raises(ValueError, match="0 \\(one per core\\)"):
        lanes_for(-1, 2)


def test_a_pass_wakes_only_the_callers_it_served_and_the_next_in_line(monkeypatch):
    """Nine callers queue, asleep, behind a held pass. Its end wakes only the first of them, who starts the
    next pass and takes every queued text; that pass's end wakes the other eight. One condition shared by
    all, woken with notify_all, woke all nine at the first pass's end: under load ~30 request threads took
    the GIL after every pass only to go back to sleep."""
    from types import SimpleNamespace

    from ragsvc.retrieval import embed_batcher

    asleep: list[str] = []
    woken: list[int] = []  # sleepers each notify reached, in order

    class CountingCondition(threading.Condition):
        def wait(self, timeout=None):
            asleep.append(threading.current_thread().name)
            return super().wait(timeout)

        def notify(self, n=1):
            if self._waiters:
                woken.append(min(n, len(self._waiters)))
            super().notify(n)

    monkeypatch.setattr(embed_batcher, "threading", SimpleNamespace(Lock=threading.Lock, Condition=CountingCondition))
    release, started, calls = threading.Event(), threading.Event(), []

    def embed(texts, held):
        calls.append(list(texts))
        if len(calls) == 1:
            started.set()
            assert release.wait(60)
        return np.array([[float(len(t)), 1.0] for t in texts], dtype=np.float32)

    batcher = EmbedBatcher(embed)
    results: dict[str, np.ndarray] = {}

    def call(text: str) -> None:
        results[text] = batcher.embed([text])[0]

    texts = ["q" * i for i in range(1, 11)]
    first = threading.Thread(target=call, args=(texts[0],))
    first.start()
    assert started.wait(60)
    waiting = [threading.Thread(target=call, args=(t,)) for t in texts[1:]]
    for t in waiting:
        t.start()
    _wait_for(lambda: len(batcher._queue) == 9 and len(asleep) == 9)
    release.set()
    for t in [first, *waiting]:
        t.join(60)
    assert [len(c) for c in calls] == [1, 9]
    assert woken[0] == 1, f"the first pass's end woke {woken[0]} sleepers"
    assert sum(woken) == 9, woken
    assert all(results[t][0] == len(t) for t in texts)
