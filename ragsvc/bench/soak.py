"""`ragsvc bench soak`: kill -9 a serving process at random points of a long ingest; nothing acknowledged is lost.

Each round starts `ragsvc serve` on the same data folder, ingests batches of short documents over HTTP from a
client thread (a batch counts as acknowledged when the server answered 201), and SIGKILLs the server after a
random delay, so kills land anywhere: mid-embedding, mid-transaction, mid-index-save. After the last round a
final server opens the folder (replaying or rebuilding its indexes) and every acknowledged document is
fetched by id; a sample is also searched for by its own text, filtered to its id, so an acknowledged
document that the catalog kept but the index lost counts as lost too.
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
    acknowledged_documents: int
    stored_documents: int
    lost: int
    index_checked: int
    index_missing: int
    config: dict[str, Any] = field(default_factory=dict)
    git_sha: str = ""
    cpu: str = ""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def run_soak(data_dir: Path, *, kills: int = 20, target_documents: int = 10_000, batch_documents: int = 25,
             max_kill_delay_s: float = 6.0, seed: int = 0) -> SoakResult:
    rng = random.Random(seed)
    acked: dict[str, str] = {}
    per_round = max(1, target_documents // max(kills, 1))
    for round_ in range(kills):
        with serve_process(data_dir) as server:
            _ensure_collection(server)
            _ingest_until_killed(server, acked, round_, per_round, batch_documents, rng.uniform(0.5, max_kill_delay_s))
    with serve_process(data_dir) as server, httpx.Client(base_url=server.url, timeout=120) as client:
        base = f"/v1/collections/{COLLECTION}"
        stored = client.get(base).json()["num_documents"]
        lost = sum(client.get(f"{base}/documents/{i}").status_code != 200 for i in sorted(acked))
        sample = rng.sample(sorted(acked), min(INDEX_SAMPLE, len(acked)))
        missing = sum(not _searchable(client, base, i, acked[i]) for i in sample)
    config = {"kills": kills, "target_documents": target_documents, "batch_documents": batch_documents,
              "max_kill_delay_s": max_kill_delay_s, "seed": seed}
    return SoakResult(kills, len(acked), stored, lost, len(sample), missing, config, package_git_sha(), cpu_model())


def _ensure_collection(server: ServerProcess) -> None:
    with httpx.Client(base_url=server.url, timeout=120) as client:
        r = client.post("/v1/collections", json={"name": COLLECTION})
        if r.status_code not in (201, 409):
            raise RuntimeError(f"creating the soak collection answered {r.status_code}: {r.text}")


def _ingest_until_killed(server: ServerProcess, acked: dict[str, str], round_: int, documents: int,
                         batch: int, delay_s: float) -> None:
    """Ingest from a thread; SIGKILL the server after `delay_s` (or once `documents` were acknowledged)."""
    done = threading.Event()

    def ingest() -> None:
        with httpx.Client(base_url=server.url, timeout=120) as client:
            for start in range(0, documents, batch):
                docs: list[dict[str, Any]] = [{"id": f"r{round_}-d{start + i}",
                    "text": f"Soak round {round_} document {start + i}: a line about item {start + i}.",
                    "metadata": {"soak_id": f"r{round_}-d{start + i}"}} for i in range(batch)]
                try:
                    r = client.post(f"/v1/collections/{COLLECTION}/documents", json={"documents": docs})
                except httpx.HTTPError:
                    break  # the server was killed mid-request: not acknowledged
                if r.status_code != 201:
                    break
                acked.update({d["id"]: d["text"] for d in docs})
        done.set()

    worker = threading.Thread(target=ingest, daemon=True)
    worker.start()
    done.wait(delay_s)  # the kill point: a random moment of the ingest
    os.kill(server.pid, signal.SIGKILL)
    worker.join()


def _searchable(client: httpx.Client, base: str, doc_id: str, text: str) -> bool:
    r = client.post(f"{base}/search", json={"query": text, "k": 1, "filter": {"soak_id": doc_id}})
    return r.status_code == 200 and [h["document_id"] for h in r.json()["hits"]] == [doc_id]
