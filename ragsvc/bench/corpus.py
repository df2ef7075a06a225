"""Benchmark vectors: real texts cut into short passages, embedded once and cached on disk.

Texts come from, in this order: the evaluation corpora under the shared data folder (SciFact abstracts,
HotpotQA paragraphs, CoSQA functions), then the docstrings of the Python standard library, then the docstrings
of every installed package. Each source is cut into windows of 20 words (~35 MiniLM tokens on average) so that
embedding 200k of them takes about an hour on two free cores.

Queries are real texts that are not in the index: half are passages held out by a hash of their text, drawn
from the same span of the stream as the indexed passages (so they match the index's mix of sources), half are
the evaluation sets' own queries.

Cache layout (under `cache_dir`), chosen so that an interrupted build resumes and nothing is embedded twice:

    corpus-v3-<num_vectors>.jsonl      frozen snapshot (passages, held-out pool with stream positions, dataset
                                       queries), reused even if packages change; a larger one serves any
                                       smaller size (its first n passages, held-out passages from that span)
    <model id>/pieces/vectors-<i>-<hash>.npy  float32 (<= CHUNK_SIZE, dim) per piece of passages, temp + rename
    <model id>/<corpus hash>/
        queries.npy                    float32 (num_queries, dim)
        manifest.json                  sizes, sources, hashes
"""

from __future__ import annotations

import ast
import hashlib
import json
import logging
import os
import random
import sysconfig
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

CORPUS_VERSION = "v3"
WINDOW_WORDS = 20
MIN_WORDS = 8
CHUNK_SIZE = 4096
HELDOUT_MODULUS = 200
"""One passage in 200 is held out as a query (by text hash), i.e. ~1,000 at 200k vectors."""
MAX_SOURCE_BYTES = 2_000_000


@dataclass(frozen=True, slots=True)
class TextCorpus:
    """Passages to index and held-out query texts, each with the source it came from."""

    texts: list[str]
    sources: list[str]
    queries: list[str]
    query_kinds: list[str]
    """'heldout_passage' or 'dataset_query:<set>' per query."""

    def digest(self) -> str:
        h = hashlib.sha256()
        for text in (*self.texts, "\x00queries\x00", *self.queries):
            h.update(text.encode())
            h.update(b"\x00")
        return h.hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class BenchCorpus:
    """Embedded corpus: vectors (n, dim) and queries (q, dim), float32, rows L2-normalised."""

    vectors: np.ndarray
    queries: np.ndarray
    texts: list[str]
    """The passage behind each vector row."""
    query_kinds: list[str]
    source_counts: dict[str, int]
    model_id: str
    corpus_hash: str
    cache_path: Path


def default_data_dir() -> Path:
    """The shared evaluation data beside the checkout (../shared/data), used when the caller names no folder
    (`ragsvc bench search` passes --data-dir, else the eval settings' data root, RAGSVC_EVAL__DATA_ROOT)."""
    return Path(__file__).resolve().parents[2].parent / "shared" / "data"


def windows(text: str, *, window_words: int = WINDOW_WORDS) -> Iterator[str]:
    """Cut `text` into consecutive ~window_words passages; drop fragments too short or not prose-like."""
    words = text.split()
    for start in range(0, len(words), window_words):
        piece = words[start : start + window_words]
        if len(piece) < MIN_WORDS:
            continue
        passage = " ".join(piece)
        letters = sum(ch.isalpha() for ch in passage)
        if letters >= 0.5 * len(passage):  # skip tables, hex dumps, code-only fragments
            yield passage


def _dataset_documents(data_dir: Path) -> Iterator[tuple[str, str]]:
    for name in ("scifact", "hotpotqa_dev100", "cosqa"):
        path = data_dir / name / "corpus.jsonl"
        if not path.is_file():
            continue
        with path.open() as fh:
            for line in fh:
                row = json.loads(line)
                yield f"data:{name}", f"{row.get('title', '')}. {row.get('text', '')}"


def _docstrings(root: Path, *, skip: Path | None) -> Iterator[str]:
    for path in sorted(root.rglob("*.py")):
        if skip is not None and skip in path.parents:
            continue
        try:
            if path.stat().st_size > MAX_SOURCE_BYTES:
                continue
            tree = ast.parse(path.read_bytes())
        except (OSError, SyntaxError, ValueError, RecursionError):
            continue  # unparsable or unreadable files are simply not part of the corpus
        for node in ast.walk(tree):
            if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
                doc = ast.get_docstring(node)
                if doc:
                    yield doc


def iter_documents(data_dir: Path) -> Iterator[tuple[str, str]]:
    """(source, text) in a fixed order: evaluation corpora, stdlib docstrings, installed packages' docstrings."""
    yield from _dataset_documents(data_dir)
    paths = sysconfig.get_paths()
    stdlib, purelib = Path(paths["stdlib"]), Path(paths["purelib"])
    for doc in _docstrings(stdlib, skip=purelib):
        yield "python:stdlib", doc
    for doc in _docstrings(purelib, skip=None):
        yield "python:site-packages", doc


def _dataset_queries(data_dir: Path) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for name in ("scifact", "hotpotqa_dev100", "cosqa"):
        path = data_dir / name / "queries.jsonl"
        if path.is_file():
            out += [(f"dataset_query:{name}", json.loads(line)["text"]) for line in path.open()]
    nq = data_dir / "nq_open" / "NQ-open.dev.jsonl"
    if nq.is_file():
        out += [("dataset_query:nq_open", json.loads(line)["question"]) for line in nq.open()]
    return out


@dataclass(frozen=True, slots=True)
class _Collected:
    """Passages in stream order, every held-out passage with its stream position, the datasets' queries."""

    texts: list[str]
    sources: list[str]
    heldout: list[tuple[str, int]]
    """(passage, number of indexed passages before it): a corpus of n passages draws only those with pos < n,
    so its held-out queries come from the same sources as its index."""
    dataset_queries: list[tuple[str, str]]
    """(kind, text), never equal to a collected passage."""


def _collect(*, num_vectors: int, data_dir: Path) -> _Collected:
    """Stream passages until `num_vectors` are indexable, holding out one in HELDOUT_MODULUS by text hash."""
    texts: list[str] = []
    sources: list[str] = []
    heldout: list[tuple[str, int]] = []
    seen: set[str] = set()
    for source, doc in iter_documents(data_dir):
        for passage in windows(doc):
            if passage in seen:
                continue
            seen.add(passage)
            if int(hashlib.sha1(passage.encode()).hexdigest()[:8], 16) % HELDOUT_MODULUS == 0:
                heldout.append((passage, len(texts)))
                continue
            texts.append(passage)
            sources.append(source)
            if len(texts) >= num_vectors:
                break
        if len(texts) >= num_vectors:
            break
    if len(texts) < num_vectors:
        raise ValueError(
            f"only {len(texts)} real passages found for --num-vectors {num_vectors}; "
            "lower --num-vectors (the benchmark never pads with random vectors)"
        )
    dataset = [(kind, text) for kind, text in _dataset_queries(data_dir) if text not in seen]
    return _Collected(texts, sources, heldout, dataset)


def _select(collected: _Collected, *, num_vectors: int, num_queries: int, seed: int = 0) -> TextCorpus:
    """The first num_vectors passages; half the queries held-out passages from that span, half dataset queries."""
    rng = random.Random(seed)
    pool = [text for text, pos in collected.heldout if pos < num_vectors]
    rng.shuffle(pool)
    picked = [(q, "heldout_passage") for q in pool[: num_queries // 2]]
    dataset = list(collected.dataset_queries)
    rng.shuffle(dataset)
    picked += [(text, kind) for kind, text in dataset[: num_queries - len(picked)]]
    if len(picked) < num_queries:
        raise ValueError(f"only {len(picked)} held-out queries available; lower --num-queries")
    return TextCorpus(collected.texts[:num_vectors], collected.sources[:num_vectors], [q for q, _ in picked],
                      [k for _, k in picked])


def collect_texts(*, num_vectors: int, num_queries: int, data_dir: Path, seed: int = 0) -> TextCorpus:
    """Stream passages until `num_vectors` are indexable; hold some out; fill queries from the datasets."""
    collected = _collect(num_vectors=num_vectors, data_dir=data_dir)
    return _select(collected, num_vectors=num_vectors, num_queries=num_queries, seed=seed)


def load_or_collect_texts(*, num_vectors: int, num_queries: int, data_dir: Path, cache_dir: Path) -> TextCorpus:
    """Reuse a frozen snapshot holding at least these passages, so installing a package later changes nothing.

    The passage stream is deterministic, so a larger snapshot's first n passages are exactly this corpus.
    """
    reusable = _larger_snapshot(cache_dir, num_vectors)
    if reusable is not None:
        rows = [json.loads(line) for line in reusable.open()]
        collected = _Collected([r["t"] for r in rows if r["kind"] == "passage"],
                               [r["src"] for r in rows if r["kind"] == "passage"],
                               [(r["t"], r["pos"]) for r in rows if r["kind"] == "heldout"],
                               [(r["src"], r["t"]) for r in rows if r["kind"] == "dataset_query"])
        return _select(collected, num_vectors=num_vectors, num_queries=num_queries)
    logger.info("collecting %d passages (parses installed Python sources)", num_vectors)
    collected = _collect(num_vectors=num_vectors, data_dir=data_dir)
    pairs = zip(collected.texts, collected.sources, strict=True)
    lines = [json.dumps({"kind": "passage", "src": s, "t": t}) for t, s in pairs]
    lines += [json.dumps({"kind": "heldout", "pos": pos, "t": t}) for t, pos in collected.heldout]
    lines += [json.dumps({"kind": "dataset_query", "src": k, "t": t}) for k, t in collected.dataset_queries]
    _atomic_write_bytes(cache_dir / f"corpus-{CORPUS_VERSION}-{num_vectors}.jsonl", ("\n".join(lines) + "\n").encode())
    return _select(collected, num_vectors=num_vectors, num_queries=num_queries)


def _larger_snapshot(cache_dir: Path, num_vectors: int) -> Path | None:
    """The smallest snapshot of this corpus version holding >= num_vectors passages."""
    best: tuple[int, Path] | None = None
    for path in cache_dir.glob(f"corpus-{CORPUS_VERSION}-*.jsonl"):
        size = int(path.name.removesuffix(".jsonl").split("-")[2])
        if size >= num_vectors and (best is None or size < best[0]):
            best = (size, path)
    return None if best is None else best[1]


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    tmp.replace(path)


def _atomic_save_npy(path: Path, array: np.ndarray) -> None:
    tmp = path.with_name(path.name + ".tmp.npy")
    with tmp.open("wb") as fh:
        np.save(fh, array)
        fh.flush()
        os.fsync(fh.fileno())
    tmp.replace(path)


def embed_cached(corpus: TextCorpus, *, embedder, cache_path: Path,
                 progress: Callable[[int, int], None] | None = None) -> np.ndarray:
    """Embed passages in CHUNK_SIZE pieces, skipping pieces already on disk (a killed build resumes).

    Pieces are named by position and content hash and shared by every corpus of the same model, so a smaller
    corpus (a prefix of the same stream) reuses the pieces a larger build already wrote. `progress` is called
    with (passages done, passages total) before the first piece (one takes minutes) and after each.
    """
    cache_path.mkdir(parents=True, exist_ok=True)
    parts: list[np.ndarray] = []
    if progress is not None:
        progress(0, len(corpus.texts))
    for i, start in enumerate(range(0, len(corpus.texts), CHUNK_SIZE)):
        chunk = corpus.texts[start : start + CHUNK_SIZE]
        key = hashlib.sha256("\x00".join(chunk).encode()).hexdigest()[:12]
        path = cache_path / f"vectors-{i:05d}-{key}.npy"
        if path.is_file():
            parts.append(np.load(path))
        else:
            vectors = embedder.embed_documents(chunk)  # (len(chunk), dim)
            _atomic_save_npy(path, vectors)
            parts.append(vectors)
        if progress is not None:
            progress(start + len(chunk), len(corpus.texts))
    return np.ascontiguousarray(np.concatenate(parts), dtype=np.float32)  # (n, dim)


def load_or_build_corpus(
    *,
    num_vectors: int,
    num_queries: int,
    cache_dir: Path,
    data_dir: Path | None = None,
    embedder_name: str = "minilm",
    progress: Callable[[int, int], None] | None = None,
) -> BenchCorpus:
    """The benchmark's vectors and queries, embedded with the packaged MiniLM, cached by model id + hash;
    `progress` follows the embedding of the passages (see `embed_cached`)."""
    import torch

    from ragsvc.embed.embedder import SentenceTransformerEmbedder

    if num_vectors < 1 or num_queries < 1:
        raise ValueError("--num-vectors and --num-queries must be at least 1")
    data_dir = data_dir or default_data_dir()
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    corpus = load_or_collect_texts(num_vectors=num_vectors, num_queries=num_queries, data_dir=data_dir,
                                   cache_dir=cache_dir)
    embedder = SentenceTransformerEmbedder(embedder_name, batch_size=64)
    digest = corpus.digest()
    cache_path = cache_dir / embedder.id / digest
    vectors = embed_cached(corpus, embedder=embedder, cache_path=cache_dir / embedder.id / "pieces",
                           progress=progress)
    cache_path.mkdir(parents=True, exist_ok=True)
    qpath = cache_path / "queries.npy"
    if qpath.is_file():
        queries = np.load(qpath)
    else:
        queries = np.stack([embedder.embed_query(q) for q in corpus.queries])  # (q, dim)
        _atomic_save_npy(qpath, queries)
    counts: dict[str, int] = {}
    for source in corpus.sources:
        counts[source] = counts.get(source, 0) + 1
    manifest = {"model_id": embedder.id, "corpus_hash": digest, "num_vectors": len(corpus.texts),
                "num_queries": len(corpus.queries), "dim": embedder.dim, "source_counts": counts,
                "corpus_version": CORPUS_VERSION, "window_words": WINDOW_WORDS}
    _atomic_write_bytes(cache_path / "manifest.json", json.dumps(manifest, indent=2).encode())
    return BenchCorpus(vectors, queries, corpus.texts, corpus.query_kinds, counts, embedder.id, digest, cache_path)
