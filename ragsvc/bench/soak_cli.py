"""The CLI half of `ragsvc bench soak`: kill -9 `ragsvc ingest` of one corpus again and again; each re-run of the
same command resumes, and the end state holds every document exactly once.

The corpus is a .jsonl file of `num_documents` short documents (one chunk each; the same sequence as the HTTP
soak). Each round runs `ragsvc ingest CORPUS -c soak` as a child process on the same data folder and SIGKILLs
it once its progress bar reaches the round's kill point, plus a random part of one batch's time, so kills
land mid-embedding, mid-commit or between batches, never while the model loads. The kill points are spread
over the corpus like the HTTP soak's (`soak.kill_points`), so every kill finds the command running. Between
rounds the catalog is opened and counted: what the killed run's bar showed as written, and what earlier
rounds stored, must be there
(`lost_between_rounds`). After the last kill the command runs to completion, and
the collection must hold exactly `num_documents` documents and chunks with the corpus's ids (`missing`,
`duplicates`); the index is then checked against the catalog: a sample of documents searched by their own
text must come back first (`index_missing`).
"""

from __future__ import annotations

import io
import json
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ragsvc.bench.provenance import cpu_model, package_git_sha
from ragsvc.bench.soak import kill_points, soak_documents
from ragsvc.embed.embedder import Embedder
from ragsvc.retrieval.vector_store import VectorStore

COLLECTION = "soak"
INDEX_SAMPLE = 200
STARTUP_TIMEOUT_S = 600.0
"""How long a round waits for the command's first committed batch (model loading on a busy machine)."""
_LAUNCH = "from ragsvc.cli import main; main()"


@dataclass(frozen=True)
class CliSoakResult:
    kills: int
    kills_before_exit: int
    """Kills that found the command still running (a run that had already finished is not a kill point)."""
    kill_points: list[int]
    """The documents each round's progress bar had to show before its kill."""
    num_documents: int
    stored_per_round: list[int]
    lost_between_rounds: int
    """Documents a killed run's progress bar showed as written that the next count did not find, plus any drop
    in the stored count from one round to the next."""
    stored_documents: int
    stored_chunks: int
    missing: int
    duplicates: int
    index_checked: int
    index_missing: int
    final_run_s: float
    config: dict[str, Any] = field(default_factory=dict)
    git_sha: str = ""
    cpu: str = ""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def run_cli_soak(work_dir: Path, *, embedder_factory: Callable[[], Embedder], kills: int = 20,
                 num_documents: int = 10_000, batch_size: int = 64, seed: int = 0) -> CliSoakResult:
    if kills < 0 or num_documents < 1 or batch_size < 1:
        raise ValueError("kills must be >= 0, num_documents >= 1 and batch_size >= 1")
    rng = random.Random(seed)
    points = [max(1, p * batch_size) for p in kill_points(rng, -(-num_documents // batch_size), kills)]
    work_dir.mkdir(parents=True, exist_ok=True)
    corpus, data = work_dir / "corpus.jsonl", work_dir / "data"
    docs = soak_documents(num_documents)
    corpus.write_text("".join(json.dumps(d) + "\n" for d in docs))
    command = [sys.executable, "-c", _LAUNCH, "ingest", str(corpus), "-c", COLLECTION, "--data-dir", str(data),
               "--batch-size", str(batch_size)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    stored_per_round, killed, unacknowledged = [], 0, 0
    for point in points:
        running, shown = _run_and_kill(command, env, num_documents, kill_at=point, batch_size=batch_size, rng=rng)
        killed += running
        stored_per_round.append(_stored(data))
        unacknowledged += max(0, shown - stored_per_round[-1])
    started = time.perf_counter()
    final = subprocess.run(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                           timeout=3600)
    if final.returncode != 0:
        raise RuntimeError(f"the resuming `ragsvc ingest` failed: {final.stderr[-2000:]}")
    final_run_s = time.perf_counter() - started
    drops = unacknowledged + sum(max(0, a - b) for a, b in zip(stored_per_round, stored_per_round[1:], strict=False))
    checked = _check(data, docs, embedder_factory(), rng)
    config = {"kills": kills, "num_documents": num_documents, "batch_size": batch_size, "seed": seed}
    return CliSoakResult(kills=kills, kills_before_exit=killed, kill_points=points, num_documents=num_documents,
                         stored_per_round=stored_per_round, lost_between_rounds=drops, **checked,
                         final_run_s=round(final_run_s, 1), config=config, git_sha=package_git_sha(),
                         cpu=cpu_model())


def _run_and_kill(command: list[str], env: dict[str, str], num_documents: int, *, kill_at: int, batch_size: int,
                  rng: random.Random) -> tuple[bool, int]:
    """Start the command; once its progress bar shows `kill_at` documents, wait a random part of one batch's
    time (measured from the bar) and SIGKILL it. Returns whether it was still running then, and the most
    documents its bar showed as written (the bar advances after each commit: those are acknowledged)."""
    proc = subprocess.Popen(command, env={**env, "COLUMNS": "200"}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    shown, reached = [0], threading.Event()
    first: list[tuple[float, int]] = []  # (when, count) the bar first showed a committed batch
    bar = re.compile(rb"(\d+)/" + str(num_documents).encode() + rb" \[")

    def read() -> None:
        stream = proc.stderr
        assert isinstance(stream, io.BufferedReader)
        tail = b""
        while chunk := stream.read1(4096):
            tail = (tail + chunk)[-4096:]
            counts = [int(c) for c in bar.findall(tail)]
            if counts and max(counts) > 0:
                shown[0] = max(shown[0], *counts)
                first[:] = first or [(time.monotonic(), shown[0])]
                if shown[0] >= kill_at:
                    reached.set()
        reached.set()  # the command ended (finished, or failed before reaching the point)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reached.wait(STARTUP_TIMEOUT_S)
    try:
        proc.wait(timeout=rng.uniform(0.0, _batch_s(first, shown[0], batch_size)))  # within the point's batch
        running = False
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
        running = True
    reader.join(timeout=60)
    return running, shown[0]


def _batch_s(first: list[tuple[float, int]], shown: int, batch_size: int) -> float:
    """Seconds one batch took so far in this run, from the bar (half a second before it has moved twice)."""
    if not first or shown <= first[0][1]:
        return 0.5
    return batch_size * (time.monotonic() - first[0][0]) / (shown - first[0][1])


def _stored(data: Path) -> int:
    """Documents the catalog holds now (0 before the collection exists)."""
    if not data.exists():
        return 0
    store = VectorStore.open(data)  # no embedder is built for counting
    try:
        names = {c.name for c in store.list_collections()}
        return store.get_collection(COLLECTION).num_documents if COLLECTION in names else 0
    finally:
        store.close()


def _check(data: Path, docs: list[dict[str, Any]], embedder: Embedder, rng: random.Random) -> dict[str, int]:
    store = VectorStore.open(data, embedder=embedder)
    try:
        info = store.get_collection(COLLECTION)
        ids = {d["id"] for d in store.list_documents(COLLECTION, limit=len(docs) + 1000)}
        sample = rng.sample(docs, min(INDEX_SAMPLE, len(docs)))
        missing_index = 0
        for d in sample:
            hits = store.search(COLLECTION, query=d["text"], k=1, filter={"soak_id": d["id"]}).hits
            missing_index += [h.document_id for h in hits] != [d["id"]]
    finally:
        store.close()
    expected = {d["id"] for d in docs}
    return {"stored_documents": info.num_documents, "stored_chunks": info.num_chunks,
            "missing": len(expected - ids),
            "duplicates": max(info.num_documents, info.num_chunks) - len(expected & ids),
            "index_checked": len(sample), "index_missing": missing_index}
