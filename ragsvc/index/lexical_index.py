"""LexicalIndex: an exact, incremental, persistent BM25 index over one collection's chunks.

Derived state like the ANN shards: built from the (chunk id, text) pairs the catalog holds, saved to its own
folder with a watermark (the highest chunk id it covers), rebuilt from the catalog when its files fail to load
(`load` raises IndexCorrupt).

Scoring is Okapi BM25 in Lucene's form, the one bm25s and Elasticsearch (hence BEIR) use:

    score(q, d) = sum over query terms t of  qtf(t) * idf(t) * tf / (tf + k1 * (1 - b + b * |d| / avgdl))
    idf(t) = ln(1 + (N - df(t) + 0.5) / (df(t) + 0.5))

with N, df and avgdl over the live documents at query time; a query term repeated counts again (qtf), as in
a Lucene boolean query. Lucene drops the constant (k1 + 1) factor; rankings do not change. Lucene's lossy
one-byte document lengths are not copied: lengths are exact.

Why exact under adds and deletes: the segments store raw term frequencies and lengths, never precomputed
scores (bm25s's sparse score matrix would be stale after every add). df(t) is counted at query time as the
number of live postings of t, which the query gathers anyway, so deletes need no per-term bookkeeping;
N and the total length are two counters. See lexical_segment.py for the main / delta / tombstone layout.

Not thread-safe: the caller serialises add / delete / merge / save against searches, as for CollectionIndex.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import bm25s
import numpy as np
import Stemmer

from ragsvc.errors import IndexCorrupt, InvalidInput
from ragsvc.index.lexical_files import LexicalSnapshot, read_snapshot, write_snapshot
from ragsvc.index.lexical_segment import DeltaSegment, MainSegment, RowTable, merge_segments
from ragsvc.index.lexical_tokens import LexicalTokenizer, TokenizerConfig


@dataclass(frozen=True, slots=True)
class Bm25Params:
    k1: float = 1.2
    """Term-frequency saturation. 1.2 is Lucene's / Elasticsearch's default (BEIR's BM25 baseline)."""
    b: float = 0.75
    """Length normalisation: 0 ignores document length, 1 divides fully by length relative to the average."""

    def __post_init__(self) -> None:
        if not (math.isfinite(self.k1) and self.k1 >= 0):
            raise ValueError(f"BM25 k1 must be a finite number >= 0 (typical 0.9-2.0), got {self.k1}")
        if not 0 <= self.b <= 1:
            raise ValueError(f"BM25 b must lie in [0, 1] (typical 0.75), got {self.b}")


@dataclass(frozen=True, slots=True)
class MergePolicy:
    fraction: float = 0.1
    """Merge once delta rows + tombstones exceed this fraction of the main segment's rows..."""
    min_rows: int = 4096
    """...and this many, so a small index does not rebuild its CSC on every batch."""


@dataclass(frozen=True, eq=False, slots=True)
class LexicalHits:
    ids: np.ndarray
    """int64 (m,) chunk ids, best first; m <= k. Chunks sharing no term with the query are never hits."""
    scores: np.ndarray
    """float64 (m,) BM25 scores, non-increasing; equal scores are ordered by ascending id."""

    @classmethod
    def empty(cls) -> LexicalHits:
        return cls(np.zeros(0, np.int64), np.zeros(0, np.float64))


class LexicalIndex:
    def __init__(self, *, tokenizer: TokenizerConfig | None = None, params: Bm25Params | None = None,
                 merge_policy: MergePolicy | None = None) -> None:
        self.tokenizer = LexicalTokenizer(tokenizer)
        self.params = params or Bm25Params()
        self.merge_policy = merge_policy or MergePolicy()
        self._vocab: dict[str, int] = {}
        self._terms: list[str] = []
        self._main = MainSegment.empty()
        self._delta = DeltaSegment()
        self._rows = RowTable()
        self._row_of: dict[int, int] = {}  # chunk id -> row, live rows only
        self._total_len = 0  # sum of live document lengths
        self.watermark = 0
        """Highest chunk id ever added; on open, the caller replays catalog chunks above it."""
        self.generation = 0

    def __len__(self) -> int:
        return len(self._row_of)

    @property
    def tokenizer_config(self) -> TokenizerConfig:
        return self.tokenizer.config

    @property
    def nbytes(self) -> int:
        """Bytes held to answer queries, roughly: postings, per-row arrays, id map and vocabulary."""
        return self._main.nbytes + self._delta.nbytes + self._rows.nbytes + 100 * (len(self) + len(self._terms))

    def live_ids(self) -> np.ndarray:
        """Sorted int64 ids of the chunks the index holds: after a reload, diff them with the catalog to find
        chunks deleted after the last save (the watermark only covers additions)."""
        return np.sort(np.fromiter(self._row_of, dtype=np.int64, count=len(self._row_of)))

    def stats(self) -> dict[str, int]:
        """Counters for logs and tests: live chunks, rows, tombstones, delta rows, terms, watermark."""
        return {"count": len(self), "rows": len(self._rows), "dead": self._rows.num_dead,
                "delta_rows": self._delta.num_rows, "terms": len(self._terms), "watermark": self.watermark}

    # -- writes --------------------------------------------------------------------------------------------

    def add(self, ids: Sequence[int] | np.ndarray, texts: Sequence[str]) -> None:
        """Index chunks (insert or replace by id); searchable by the next call. May trigger a merge."""
        id_list = _check_ids(ids, texts)
        if not id_list:
            return
        self.delete(id_list)  # replacing a chunk: its old text stops counting
        docs = [Counter(terms) for terms in self.tokenizer.tokenize(list(texts))]
        lens = np.array([sum(doc.values()) for doc in docs], dtype=np.int32)
        first = self._rows.append(np.array(id_list, dtype=np.int64), lens)
        for offset, (chunk_id, doc) in enumerate(zip(id_list, docs, strict=True)):
            self._delta.add_doc(first + offset, {self._term_id(term): tf for term, tf in doc.items()})
            self._row_of[chunk_id] = first + offset
        self._total_len += int(lens.sum())
        self.watermark = max(self.watermark, max(id_list))
        self._maybe_merge()

    def delete(self, ids: Sequence[int] | np.ndarray) -> None:
        """Tombstone these chunks; ids the index does not hold are ignored."""
        rows = [row for i in np.asarray(ids, dtype=np.int64).reshape(-1).tolist()
                if (row := self._row_of.pop(i, None)) is not None]
        if not rows:
            return
        row_array = np.array(rows, dtype=np.int64)
        self._total_len -= int(self._rows.doc_len[row_array].sum())
        self._rows.kill(row_array)
        self._maybe_merge()

    def merge(self) -> None:
        """Fold the delta into the main segment and drop tombstoned rows and unused terms (O(index))."""
        if not self._delta.num_rows and not self._rows.num_dead:
            return
        live = self._rows.live
        self._main, kept_terms = merge_segments(self._main, self._delta, live, len(self._terms))
        self._terms = [self._terms[t] for t in kept_terms.tolist()]
        self._vocab = {term: i for i, term in enumerate(self._terms)}
        self._delta = DeltaSegment()
        self._rows = RowTable(self._rows.ids[live], self._rows.doc_len[live])
        self._row_of = dict(zip(self._rows.ids.tolist(), range(len(self._rows)), strict=True))

    # -- search --------------------------------------------------------------------------------------------

    def search(self, query: str, k: int, *, allowed_ids: Sequence[int] | np.ndarray | None = None) -> LexicalHits:
        """Top k chunks by BM25 for a text query; a query with no indexed term gives no hits."""
        if not isinstance(query, str):
            raise InvalidInput(f"a lexical query must be text, got {type(query).__name__}")
        return self.search_terms(self.tokenizer.tokenize([query])[0], k, allowed_ids=allowed_ids)

    def search_terms(self, terms: Sequence[str], k: int, *,
                     allowed_ids: Sequence[int] | np.ndarray | None = None) -> LexicalHits:
        """Top k for already tokenized query terms (use `self.tokenizer`, or the terms will not match)."""
        if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
            raise InvalidInput(f"k must be an integer >= 1, got {k!r}")
        query_tf = Counter(t for term in terms if (t := self._vocab.get(term)) is not None)
        if not query_tf or not len(self):
            return LexicalHits.empty()
        rows, weights = self._weights(query_tf)
        if allowed_ids is not None:
            allowed = np.isin(self._rows.ids[rows], np.asarray(allowed_ids, dtype=np.int64).reshape(-1))
            rows, weights = rows[allowed], weights[allowed]
        scores = np.bincount(rows, weights=weights)  # (max row + 1,): sums in query-term order per row
        candidates = np.flatnonzero(scores)  # every posting weighs > 0, so these are the matching rows
        return _top_k(self._rows.ids[candidates], scores[candidates], int(k))

    def _weights(self, query_tf: Counter[int]) -> tuple[np.ndarray, np.ndarray]:
        """(rows, BM25 contribution) over the live postings of each query term, concatenated term by term."""
        k1, b = self.params.k1, self.params.b
        num_docs = len(self)
        avgdl = self._total_len / num_docs
        live, doc_len = self._rows.live, self._rows.doc_len
        all_rows, all_weights = [], []
        for term, qtf in query_tf.items():
            main_rows, main_tfs = self._main.postings(term)
            delta_rows, delta_tfs = self._delta.postings(term)
            rows = np.concatenate([main_rows, delta_rows])  # (postings,)
            tfs = np.concatenate([main_tfs, delta_tfs]).astype(np.float64)
            if self._rows.num_dead:
                keep = live[rows]
                rows, tfs = rows[keep], tfs[keep]
            df = len(rows)
            if not df:
                continue
            idf = math.log(1.0 + (num_docs - df + 0.5) / (df + 0.5))
            norm = k1 * (1.0 - b + b * doc_len[rows] / avgdl)
            all_rows.append(rows)
            all_weights.append(qtf * idf * tfs / (tfs + norm))
        if not all_rows:
            return np.zeros(0, np.int32), np.zeros(0, np.float64)
        return np.concatenate(all_rows), np.concatenate(all_weights)

    # -- persistence ---------------------------------------------------------------------------------------

    def save(self, directory: Path) -> None:
        """Merge, then write a new generation of the files and commit it (see lexical_files.py)."""
        self.merge()
        self.generation += 1
        versions = {"bm25s": bm25s.__version__, "PyStemmer": Stemmer.version()}
        write_snapshot(Path(directory), self._snapshot(), versions=versions)

    @classmethod
    def load(cls, directory: Path, *, merge_policy: MergePolicy | None = None) -> LexicalIndex | None:
        """The saved index (with its stored tokenizer and BM25 params); None if none was saved.

        IndexCorrupt when the files cannot be trusted: rebuild from the catalog. Compare `tokenizer_config`
        and `params` with the wanted ones and rebuild on a difference.
        """
        snap = read_snapshot(Path(directory))
        if snap is None:
            return None
        try:
            tokenizer = TokenizerConfig.from_dict(snap.tokenizer)
            params = Bm25Params(**snap.params)
        except (TypeError, ValueError) as exc:
            raise IndexCorrupt(f"lexical manifest in {directory} holds an unusable config ({exc})") from exc
        index = cls(tokenizer=tokenizer, params=params, merge_policy=merge_policy)
        index._restore(snap)
        return index

    def _snapshot(self) -> LexicalSnapshot:
        return LexicalSnapshot(
            terms=self._terms, indptr=self._main.indptr, rows=self._main.rows, tfs=self._main.tfs,
            row_ids=self._rows.ids, doc_len=self._rows.doc_len, tokenizer=self.tokenizer_config.to_dict(),
            params=asdict(self.params), watermark=self.watermark, generation=self.generation)

    def _restore(self, snap: LexicalSnapshot) -> None:
        self._terms = list(snap.terms)
        self._vocab = {term: i for i, term in enumerate(self._terms)}
        self._main = MainSegment(snap.indptr.astype(np.int64), snap.rows.astype(np.int32),
                                 snap.tfs.astype(np.int32))
        self._rows = RowTable(snap.row_ids, snap.doc_len)
        self._row_of = dict(zip(self._rows.ids.tolist(), range(len(self._rows)), strict=True))
        self._total_len = int(self._rows.doc_len.sum())
        self.watermark, self.generation = snap.watermark, snap.generation

    # -- helpers -------------------------------------------------------------------------------------------

    def _term_id(self, term: str) -> int:
        term_id = self._vocab.get(term)
        if term_id is None:
            term_id = self._vocab[term] = len(self._terms)
            self._terms.append(term)
        return term_id

    def _maybe_merge(self) -> None:
        pending = self._delta.num_rows + self._rows.num_dead
        main_rows = len(self._rows) - self._delta.num_rows
        if pending > max(self.merge_policy.min_rows, self.merge_policy.fraction * main_rows):
            self.merge()


def _check_ids(ids: Sequence[int] | np.ndarray, texts: Sequence[str]) -> list[int]:
    array_ids = np.asarray(ids).reshape(-1)
    if len(array_ids) and array_ids.dtype.kind not in "iu":
        raise InvalidInput(f"chunk ids must be integers, got {array_ids.dtype}")
    if isinstance(texts, str) or len(array_ids) != len(texts):
        raise InvalidInput(f"got {len(array_ids)} ids for {1 if isinstance(texts, str) else len(texts)} texts; "
                           "pass one id per text, both as lists")
    bad = next((type(t).__name__ for t in texts if not isinstance(t, str)), None)
    if bad is not None:
        raise InvalidInput(f"chunk texts must be str, got {bad}")
    id_list: list[int] = array_ids.astype(np.int64).tolist()
    if id_list and min(id_list) < 0:
        raise InvalidInput("chunk ids must be non-negative")
    if len(set(id_list)) != len(id_list):
        raise InvalidInput("chunk ids in one add call must be unique")
    return id_list


def _top_k(ids: np.ndarray, scores: np.ndarray, k: int) -> LexicalHits:
    """Best k by score, ties by smaller id; partitions first so a common term does not sort every match."""
    if len(scores) > k:
        kth = np.partition(scores, len(scores) - k)[len(scores) - k]  # the k-th largest score
        near = scores >= kth  # may exceed k on ties; the sort below settles them by id
        ids, scores = ids[near], scores[near]
    order = np.lexsort((ids, -scores))[:k]
    return LexicalHits(ids[order], scores[order])

