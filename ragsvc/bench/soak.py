"""`ragsvc bench soak`: kill -9 a serving process at random points of one long HTTP ingest; nothing acknowledged
is lost, nothing is stored twice, and the indexes agree with the catalog.

The ingest is one fixed sequence of `target_documents` short documents (one chunk each), sent in batches. Each
round starts `ragsvc serve` on the same data folder, resumes the sequence at the first batch not yet
acknowledged (a batch counts as acknowledged when the server answered 201), and SIGKILLs the server after a
random delay, so kills land anywhere: mid-embedding, mid-transaction, mid-index-save, or just after an
acknowledgement. A batch cut off by the kill is sent again by the next round (an identical re-send is skipped
by content hash, so it cannot duplicate). After the last kill a final server finishes the sequence, and then:
every document is fetched by id (`lost`), the collection must hold exactly `target_documents` documents and
chunks (`duplicates`: anything above), and a sample is searched for by its own text, filtered to its id
(`index_missing`: acknowledged in the catalog but lost by the rebuilt or replayed index).
"""

from __future__ import annotations

import os
import random
import signal
import threading
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


@dataclass
class _Progress:
    next_batch: int = 0
    acknowledged: int = 0
    cut_off: bool = False


def run_soak(data_dir: Path, *, kills: int = 20, target_documents: int = 10_000, batch_documents: int = 25,
             max_kill_delay_s: float = 6.0, seed: int = 0) -> SoakResult:
    if kills < 0 or target_documents < 1 or batch_documents < 1 or max_kill_delay_s < 0.5:
        raise ValueError("kills must be >= 0, documents and batch >= 1, max_kill_delay_s >= 0.5")
    rng = random.Random(seed)
    docs = soak_documents(target_documents)
    batches = [docs[i:i + batch_documents] for i in range(0, len(docs), batch_documents)]
    progress, per_round, mid_request = _Progress(), [], 0
    for _ in range(kills):
        before = progress.acknowledged
        with serve_process(data_dir) as server:
            _ensure_collection(server)
            _ingest(server, batches, progress, kill_after_s=rng.uniform(0.5, max_kill_delay_s))
        mid_request += progress.cut_off
        per_round.append(progress.acknowledged - before)
    with serve_process(data_dir) as server:
        _ensure_collection(server)
        _ingest(server, batches, progress, kill_after_s=None)  # the rest, to the end of the sequence
        result = _verify(server, docs, rng)
    config = {"kills": kills, "target_documents": target_documents, "batch_documents": batch_documents,
              "max_kill_delay_s": max_kill_delay_s, "seed": seed}
    return SoakResult(kills=kills, kills_mid_request=mid_request, target_documents=target_documents,
                      acknowledged_documents=progress.acknowledged, acknowledged_per_round=per_round, **result,
                      config=config, git_sha=package_git_sha(), cpu=cpu_model())


def _ensure_collection(server: ServerProcess) -> None:
    with httpx.Client(base_url=server.url, timeout=120) as client:
        r = client.post("/v1/collections", json={"name": COLLECTION})
        if r.status_code not in (201, 409):
            raise RuntimeError(f"creating the soak collection answered {r.status_code}: {r.text}")


def _ingest(server: ServerProcess, batches: list[list[dict[str, Any]]], progress: _Progress,
            kill_after_s: float | None) -> None:
    """Send batches from `progress.next_batch` on from a thread; SIGKILL the server after `kill_after_s` (None:
    send them all, no kill)."""
    done = threading.Event()
    progress.cut_off = False

    def send() -> None:
        with httpx.Client(base_url=server.url, timeout=300) as client:
            while progress.next_batch < len(batches):
                batch = batches[progress.next_batch]
                try:
                    r = client.post(f"/v1/collections/{COLLECTION}/documents", json={"documents": batch})
                except httpx.HTTPError:
                    progress.cut_off = True  # the server was killed mid-request: not acknowledged
                    break
                if r.status_code != 201:
                    raise RuntimeError(f"ingest answered {r.status_code}: {r.text}")
                progress.next_batch += 1
                progress.acknowledged += len(batch)
        done.set()

    worker = threading.Thread(target=send, daemon=True)
    worker.start()
    if kill_after_s is None:
        worker.join()
        return
    done.wait(kill_after_s)  # the kill point: a random moment of the ingest
    os.kill(server.pid, signal.SIGKILL)
    worker.join()


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
