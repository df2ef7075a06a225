"""`ragsvc bench ingest`: embedding and end-to-end ingest speed on SciFact, plain sentence-transformers as the peer.

One process, one run, equal work: the first `num_docs` SciFact abstracts (title and text) are cut into the
chunks a collection with the default chunking would store; then

- the peer: sentence-transformers' own `encode` in float32 (batch 32) over those chunk texts;
- each of our encode paths over the same texts (float32 sorted by token count; bfloat16 autocast sorted; the
  locally converted OpenVINO model, sorted, where the openvino package is installed; its int8 copy where nncf
  is too), each
  with docs/s, chunks/s, tokens/s, the peak RSS while it ran and its cosine to the peer's vectors;
- end to end: the same documents through the pipelined bulk writer `ragsvc ingest` uses (`bulk_ingest.py`:
  chunk and embed batch n+1 while batch n commits its transaction and updates the ANN index) into a fresh
  folder with the settings' embedder (precision "auto"), its stored vectors compared with the peer's;
- again unchanged: the same documents once more into the same collection (skipped by content hash), and into a
  new collection of the same store (every chunk served by the embedding cache, keyed by text hash).

Each timed pass follows a warm-up that is not counted. The JSON records the CPU, the git sha and the config.
"""

from __future__ import annotations

import json
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ragsvc.bench.provenance import cpu_model, package_git_sha
from ragsvc.embed.embedder import SentenceTransformerEmbedder
from ragsvc.embed.fast import cpu_has_native_bf16
from ragsvc.embed.lean_bert import LeanSetting
from ragsvc.embed.openvino_int8 import QuantizeSetting, nncf_available
from ragsvc.embed.openvino_path import BackendSetting, openvino_available
from ragsvc.embed.precision import Precision, agreement
from ragsvc.index.spec import IndexSpec
from ragsvc.retrieval.ingest import sha256, split_document
from ragsvc.store.records import CollectionRecord
from ragsvc.types import DocumentInput

WARMUP_TEXTS = 32
WARMUP_DOCS = 16
"""End-to-end ingest warms up on documents past the sample, so none of the sample's chunks is cached before."""
END_TO_END_TARGET = 3.0
REINGEST_TARGET = 50.0


@dataclass(frozen=True, slots=True)
class IngestBenchConfig:
    data_root: Path
    num_docs: int = 2000
    chunk_tokens: int = 200
    chunk_overlap: int = 32
    batch_size: int = 32
    ingest_batch_docs: int = 256
    """Documents per prepared batch (a transaction holds one or more), as `ragsvc ingest` cuts them."""
    threads: int = 2
    model: str = "minilm"
    torch_paths: bool = True
    """Time our torch encode paths (float32 and bfloat16, sorted) too; the peer, OpenVINO and end to end always."""

    def __post_init__(self) -> None:
        if not 1 <= self.num_docs <= 1_000_000:
            raise ValueError(f"num_docs must be in [1, 1000000], got {self.num_docs}")
        if self.threads < 1 or self.batch_size < 1 or self.ingest_batch_docs < 1:
            raise ValueError("threads, batch_size and ingest_batch_docs must be at least 1")


def load_scifact(data_root: Path, num_docs: int) -> list[DocumentInput]:
    """The first `num_docs` SciFact documents in file order (a fixed sample), title and abstract as one text."""
    path = Path(data_root) / "scifact" / "corpus.jsonl"
    if not path.is_file():
        raise ValueError(f"{path} not found: pass --data-root, the folder that holds scifact/corpus.jsonl")
    docs: list[DocumentInput] = []
    with path.open(encoding="utf-8") as lines:
        for line in lines:
            row = json.loads(line)
            text = f"{row.get('title', '')}\n\n{row.get('text', '')}".strip()
            if text:
                docs.append(DocumentInput(text=text, id=str(row["_id"])))
            if len(docs) >= num_docs:
                break
    return docs


class PeakRss:
    """The highest resident set size seen while the block ran, sampled every 20 ms by a thread (psutil)."""

    def __enter__(self) -> PeakRss:
        import psutil

        self._process = psutil.Process()
        self.peak_mb = self._process.memory_info().rss / 2**20
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.02):
            self.peak_mb = max(self.peak_mb, self._process.memory_info().rss / 2**20)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak_mb = max(self.peak_mb, self._process.memory_info().rss / 2**20)


@dataclass(frozen=True, slots=True)
class EmbedRun:
    name: str
    precision: str
    seconds: float
    chunks_per_s: float
    docs_per_s: float
    tokens_per_s: float
    peak_rss_mb: float
    cosine_mean: float
    cosine_min: float


def time_embedding(name: str, precision: str, embed: Callable[[Sequence[str]], np.ndarray], texts: list[str], *,
                   num_docs: int, num_tokens: int, reference: np.ndarray | None) -> tuple[EmbedRun, np.ndarray]:
    """Warm up on a few texts, then embed all of them once, timed; the row and the vectors."""
    embed(texts[:WARMUP_TEXTS])
    with PeakRss() as rss:
        start = time.perf_counter()
        vectors = embed(texts)
        seconds = time.perf_counter() - start
    agree = agreement(reference, vectors) if reference is not None else agreement(vectors, vectors)
    return EmbedRun(name, precision, round(seconds, 2), round(len(texts) / seconds, 2),
                    round(num_docs / seconds, 2), round(num_tokens / seconds, 1), round(rss.peak_mb, 1),
                    round(agree.cosine_mean, 6), round(agree.cosine_min, 6)), vectors


def run_ingest_bench(config: IngestBenchConfig, *, embedder_factory: Callable[[], SentenceTransformerEmbedder],
                     work_dir: Path | None = None) -> dict[str, Any]:
    """The whole benchmark; `embedder_factory` builds the embedder end-to-end ingest uses (the settings' one)."""
    import torch

    torch.set_num_threads(config.threads)
    loaded = load_scifact(config.data_root, config.num_docs + WARMUP_DOCS)
    docs, warmup = loaded[: config.num_docs], loaded[config.num_docs :]
    plain = SentenceTransformerEmbedder(config.model, batch_size=config.batch_size)
    record = CollectionRecord("bench", plain.id, plain.dim, IndexSpec(), config.chunk_tokens, config.chunk_overlap)
    texts = [c.text for d in docs for c in split_document(d, plain, record)]
    num_tokens = sum(min(plain.count_tokens(t) + 2, plain.max_seq_length) for t in texts)
    common = {"num_docs": len(docs), "num_tokens": num_tokens}
    ref_row, reference = time_embedding("st-fp32", "float32", plain.embed_documents, texts, reference=None,
                                        **common)
    runs = [ref_row]
    paths: list[tuple[str, Precision, BackendSetting, QuantizeSetting, LeanSetting]] = []
    skipped: list[dict[str, str]] = []
    if config.torch_paths:
        paths.append(("ragsvc-fp32-sorted", "float32", "torch", "none", "off"))
        paths.append(("ragsvc-fp32-sorted-lean-traced", "float32", "torch", "none", "traced"))
        if cpu_has_native_bf16():
            paths.append(("ragsvc-bf16-sorted", "bfloat16", "torch", "none", "off"))
        else:  # emulated bfloat16 takes minutes and is never chosen: nothing to learn from timing it
            skipped.append({"name": "ragsvc-bf16-sorted", "reason": "this CPU has no bfloat16 instructions"})
    if openvino_available():
        paths.append(("ragsvc-openvino-sorted", "bfloat16", "openvino", "none", "off"))
    if nncf_available():
        paths.append(("ragsvc-openvino-int8-sorted", "bfloat16", "openvino", "int8", "off"))
    for name, precision, backend, quantize, lean in paths:
        fast = SentenceTransformerEmbedder(config.model, batch_size=config.batch_size, precision=precision,
                                           sort_by_length=True, backend=backend, quantize=quantize, lean_forward=lean)
        row, _ = time_embedding(name, fast.fast_path.label if fast.fast_path else "float32",
                                fast.embed_documents, texts, reference=reference, **common)
        runs.append(row)
        del fast
    with tempfile.TemporaryDirectory(dir=work_dir) as tmp:
        end_to_end, reingest = _end_to_end(config, docs, warmup, embedder_factory(), Path(tmp), reference, texts)
    return {
        "cpu": cpu_model(), "git_sha": package_git_sha(), "config": {**asdict(config), "data_root": "<data-root>"},
        "num_docs": len(docs), "num_chunks": len(texts), "num_tokens": num_tokens,
        "reference": asdict(ref_row), "runs": [asdict(r) for r in runs[1:]], "skipped_runs": skipped,
        "end_to_end": end_to_end, "reingest": reingest,
        "targets": _targets(ref_row, end_to_end, reingest),
    }


def _end_to_end(config: IngestBenchConfig, docs: list[DocumentInput], warmup: list[DocumentInput],
                embedder: SentenceTransformerEmbedder, data_dir: Path, reference: np.ndarray, texts: list[str]
                ) -> tuple[dict[str, Any], dict[str, Any]]:
    """First ingest, unchanged re-ingest, and a new collection of the same texts, through the real store."""
    from ragsvc.retrieval.bulk_ingest import ingest_pipelined
    from ragsvc.retrieval.vector_store import VectorStore

    store = VectorStore.open(data_dir, embedder=embedder)
    try:
        store.create_collection("warmup", chunk_tokens=config.chunk_tokens, chunk_overlap=config.chunk_overlap)
        if warmup:
            store.add_documents("warmup", warmup)
        seconds: dict[str, float] = {}
        for name in ("bench", "bench-again", "bench-cached"):
            collection = "bench" if name == "bench-again" else name
            if name != "bench-again":
                store.create_collection(collection, chunk_tokens=config.chunk_tokens,
                                        chunk_overlap=config.chunk_overlap)
            batches = [docs[i : i + config.ingest_batch_docs] for i in range(0, len(docs), config.ingest_batch_docs)]
            with PeakRss() as rss:
                start = time.perf_counter()
                ingest_pipelined(store, collection, batches)  # as `ragsvc ingest` loads files
                seconds[name] = time.perf_counter() - start
            if name == "bench":
                peak_mb = rss.peak_mb
        info = store.get_collection("bench")
        hashes = [sha256(t) for t in texts]
        stored = store.catalog.cached_vectors(embedder.id, hashes, embedder.dim)
    finally:
        store.close()
    agree = agreement(reference, np.stack([stored[h] for h in hashes]))
    first = seconds["bench"]
    precision = embedder.fast_path.label if embedder.fast_path is not None else "float32"
    end_to_end = {"name": f"ragsvc-ingest-{precision}", "precision": precision,
                  "precision_choice": embedder.fast_path.choice.reason if embedder.fast_path else "plain encode",
                  "backend_choice": (embedder.fast_path.backend_choice.reason
                                     if embedder.fast_path and embedder.fast_path.backend_choice else "torch"),
                  "seconds": round(first, 2),
                  "chunks_per_s": round(info.num_chunks / first, 2), "docs_per_s": round(len(docs) / first, 2),
                  "num_chunks": info.num_chunks, "peak_rss_mb": round(peak_mb, 1),
                  "cosine_mean": round(agree.cosine_mean, 6), "cosine_min": round(agree.cosine_min, 6)}
    reingest = {
        "unchanged_same_collection_s": round(seconds["bench-again"], 3),
        "unchanged_speedup": round(first / seconds["bench-again"], 1),
        "new_collection_from_cache_s": round(seconds["bench-cached"], 2),
        "new_collection_speedup": round(first / seconds["bench-cached"], 2),
    }
    return end_to_end, reingest


def _targets(reference: EmbedRun, end_to_end: dict[str, Any], reingest: dict[str, Any]) -> list[dict[str, Any]]:
    ratio = end_to_end["chunks_per_s"] / reference.chunks_per_s
    return [
        {"name": "end_to_end_vs_st_fp32", "value": round(ratio, 2), "target": END_TO_END_TARGET,
         "passed": ratio >= END_TO_END_TARGET and end_to_end["cosine_mean"] >= 0.99},
        {"name": "reingest_unchanged_speedup", "value": reingest["unchanged_speedup"], "target": REINGEST_TARGET,
         "passed": reingest["unchanged_speedup"] >= REINGEST_TARGET},
    ]


def to_markdown(result: dict[str, Any]) -> str:
    """A short table of the runs, end to end and re-ingest, for eval/baselines."""
    ref = result["reference"]
    lines = [f"# ingest benchmark ({result['num_docs']} SciFact docs, {result['num_chunks']} chunks, "
             f"{result['num_tokens']} tokens)", "", f"CPU {result['cpu']}, git {result['git_sha'][:10]}, "
             f"{result['config']['threads']} threads", "",
             "| run | precision | chunks/s | docs/s | tokens/s | x st-fp32 | peak RSS MiB | cosine mean | cosine min |",
             "|---|---|---|---|---|---|---|---|---|"]
    for row in [ref, *result["runs"]]:
        lines.append(f"| {row['name']} | {row['precision']} | {row['chunks_per_s']} | {row['docs_per_s']} | "
                     f"{row['tokens_per_s']} | {row['chunks_per_s'] / ref['chunks_per_s']:.2f} | "
                     f"{row['peak_rss_mb']} | {row['cosine_mean']:.4f} | {row['cosine_min']:.4f} |")
    lines += [f"| {row['name']} | skipped: {row['reason']} | | | | | | | |" for row in result.get("skipped_runs", [])]
    e2e, again = result["end_to_end"], result["reingest"]
    lines += ["", f"End to end ({e2e['name']}: chunk, embed, store, index): {e2e['chunks_per_s']} chunks/s, "
              f"{e2e['docs_per_s']} docs/s ({e2e['chunks_per_s'] / ref['chunks_per_s']:.2f}x st-fp32 encode alone), "
              f"cosine mean {e2e['cosine_mean']:.4f}, min {e2e['cosine_min']:.4f}.", "",
              f"Re-ingest unchanged: {again['unchanged_same_collection_s']} s ({again['unchanged_speedup']}x faster); "
              f"the same texts into a new collection (embedding cache): {again['new_collection_from_cache_s']} s "
              f"({again['new_collection_speedup']}x).", ""]
    lines += [f"- target {t['name']}: {t['value']} vs {t['target']}: {'PASS' if t['passed'] else 'FAIL'}"
              for t in result["targets"]]
    return "\n".join(lines) + "\n"
