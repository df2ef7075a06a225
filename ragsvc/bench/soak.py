"""`ragsvc bench soak`: kill -9 a serving process at random points of one long HTTP ingest; nothing acknowledged
is lost, nothing is stored twice, and the indexes agree with the catalog.

The ingest is one fixed sequence of `target_documents` short documents (one chunk each), sent in batches. Each
round starts `ragsvc serve` on the same data folder, resumes the sequence at the first batch not yet
acknowledged (a batch counts as acknowledged when the server answered 201), and SIGKILLs the server at its
kill point. The kill points are spread over the sequence, not over time (`kill_points`: one batch drawn in each
of `kills` equal spans, the last batch excluded), so every kill finds the ingest running however fast the
server is; within the point's batch the kill waits a random part of a batch's measured duration, so kills
land anywhere in a request: mid-embedding, mid-transaction, or just after an acknowledgement. A batch cut off
by the kill is sent again by the next round (an identical re-send is skipped by content hash, so it cannot
duplicate). After the last kill a final server finishes the sequence, and then:
every document is fetched by id (`lost`), the collection must hold exactly `target_documents` documents and
chunks (`duplicates`: anything above), and a sample is searched for by its own text, filtered to its id
(`index_missing`: acknowledged in the catalog but lost by the rebuilt or replayed index).
"""

from __future__ import annotations

import os
import random
import signal
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx

from ragsvc.bench.provenance import cpu_model, package_git_sha
from ragsvc.bench.server_process import ServerProcess, serve_process

COLLECTION = "soak"
INDEX_SAMPLE = 200


@dataclass(frozen=True)
class SoakResult:
    kills: int
    kills_mid_request: int
    """Kills that cut off a request in flight (the others landed between requests: after an acknowledgement)."""
    kill_points: list[int]
    """The document position each round's kill was aimed at (the first document of the point's batch)."""
    target_documents: int
    acknowledged_documents: int
    stored_documents: int
    stored_chunks: int
    lost: int
    duplicates: int
    index_checked: int
    index_missing: int
    acknowledged_per_round: list[int] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)
    git_sha: str = ""
    cpu: str = ""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def soak_documents(n: int) -> list[dict[str, Any]]:
    """The fixed sequence the soak ingests: short, distinct, one chunk each."""
    return [{"id": f"s{i}", "text": f"Soak document {i}: item {i} weighs {i * 7 % 1000} grams and is kept in bin "
                                    f"{i % 97}.", "metadata": {"soak_id": f"s{i}"}} for i in range(n)]


def kill_points(rng: random.Random, num_batches: int, kills: int) -> list[int]:
    """Ascending batch indexes, one drawn uniformly in each of `kills` equal spans of batches 0..n-2: the kills
    cover the whole ingest, and each has at least one batch after it to land in."""
    if kills and num_batches < 2:
        raise ValueError("the soak needs at least two batches: raise documents or lower batch_documents")
    span = (num_batches - 1) / max(kills, 1)
    return [min(num_batches - 2, int((k + rng.random()) * span)) for k in range(kills)]


@dataclass
class _Progress:
    next_batch: int = 0
    acknowledged: int = 0
    cut_off: bool = False
    batch_s: float = 0.5
    """A moving average of one batch's request time: the range a kill's delay is drawn from."""


def run_soak(data_dir: Path, *, kills: int = 20, target_documents: int = 10_000, batch_documents: int = 25,
             seed: int = 0) -> SoakResult:
    if kills < 0 or target_documents < 1 or batch_documents < 1:
        raise ValueError("kills must be >= 0, documents and batch >= 1")
    rng = random.Random(seed)
    docs = soak_documents(target_documents)
    batches = [docs[i:i + batch_documents] for i in range(0, len(docs), batch_documents)]
    points = kill_points(rng, len(batches), kills)
    progress, per_round, mid_request = _Progress(), [], 0
    for point in points:
        before = progress.acknowledged
        with serve_process(data_dir) as server:
            _ensure_collection(server)
            _ingest(server, batches, progress, kill_at=point, rng=rng)
        mid_request += progress.cut_off
        per_round.append(progress.acknowledged - before)
    with serve_process(data_dir) as server:
        _ensure_collection(server)
        _ingest(server, batches, progress, kill_at=None, rng=rng)  # the rest, to the end of the sequence
        result = _verify(server, docs, rng)
    config = {"kills": kills, "target_documents": target_documents, "batch_documents": batch_documents,
              "seed": seed}
    return SoakResult(kills=kills, kills_mid_request=mid_request, target_documents=target_documents,
                      kill_points=[p * batch_documents for p in points],
                      acknowledged_documents=progress.acknowledged, acknowledged_per_round=per_round, **result,
                      config=config, git_sha=package_git_sha(), cpu=cpu_model())


def _ensure_collection(server: ServerProcess) -> None:
    with httpx.Client(base_url=server.url, timeout=120) as client:
        r = client.post("/v1/collections", json={"name": COLLECTION})
        if r.status_code not in (201, 409):
            raise RuntimeError(f"creating the soak collection answered {r.status_code}: {r.text}")


def _ingest(server: ServerProcess, batches: list[list[dict[str, Any]]], progress: _Progress,
            kill_at: int | None, rng: random.Random) -> None:
    """Send batches from `progress.next_batch` on from a thread; once batch `kill_at` (or a later one) is sent,
    SIGKILL the server a random part of a batch's time later (None: send them all, no kill)."""
    done, reached = threading.Event(), threading.Event()
    progress.cut_off = False
    failures: list[BaseException] = []

    def send() -> None:
        try:
            _send(server, batches, progress, kill_at, reached)
        except BaseException as exc:  # handed to the caller's thread after the join
            failures.append(exc)
        finally:
            reached.set()
            done.set()

    worker = threading.Thread(target=send, daemon=True)
    worker.start()
    if kill_at is not None:
        reached.wait()
        done.wait(rng.uniform(0.0, progress.batch_s))  # the kill point: a random moment of the point's batch
        os.kill(server.pid, signal.SIGKILL)
    worker.join()
    if failures:
        raise failures[0]


def _send(server: ServerProcess, batches: list[list[dict[str, Any]]], progress: _Progress, kill_at: int | None,
          reached: threading.Event) -> None:
    """The batches from `progress.next_batch` on, in order; `reached` is set as batch `kill_at` goes out."""
    with httpx.Client(base_url=server.url, timeout=300) as client:
        while progress.next_batch < len(batches):
            if kill_at is not None and progress.next_batch >= kill_at:
                reached.set()
            batch = batches[progress.next_batch]
            started = time.perf_counter()
            try:
                r = client.post(f"/v1/collections/{COLLECTION}/documents", json={"documents": batch})
            except httpx.HTTPError:
                progress.cut_off = True  # the server was killed mid-request: not acknowledged
                break
            if r.status_code != 201:
                raise RuntimeError(f"ingest answered {r.status_code}: {r.text}")
            progress.batch_s = 0.8 * progress.batch_s + 0.2 * (time.perf_counter() - started)
            progress.next_batch += 1
            progress.acknowledged += len(batch)


def _verify(server: ServerProcess, docs: list[dict[str, Any]], rng: random.Random) -> dict[str, int]:
    base = f"/v1/collections/{COLLECTION}"
    with httpx.Client(base_url=server.url, timeout=120) as client:
        info = client.get(base).json()
        lost = sum(client.get(f"{base}/documents/{d['id']}").status_code != 200 for d in docs)
        sample = rng.sample(docs, min(INDEX_SAMPLE, len(docs)))
        missing = sum(not _searchable(client, base, d["id"], d["text"]) for d in sample)
    stored, chunks = int(info["num_documents"]), int(info["num_chunks"])
    return {"stored_documents": stored, "stored_chunks": chunks, "lost": lost,
            "duplicates": max(stored, chunks) - len(docs) + lost, "index_checked": len(sample),
            "index_missing": missing}


def _searchable(client: httpx.Client, base: str, doc_id: str, text: str) -> bool:
    r = client.post(f"{base}/search", json={"query": text, "k": 1, "filter": {"soak_id": doc_id}})
    return r.status_code == 200 and [h["document_id"] for h in r.json()["hits"]] == [doc_id]
