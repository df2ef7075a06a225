"""What `ragsvc ingest` shows while it runs and when it ends: documents/s, chunks/s, ETA, what was skipped
(files with no text counted apart from entries that could not be read, since only the latter need fixing).

The bar counts entries (documents, and lines or files that could not be read) against the total counted
before the load starts, so its rate is documents/s and its ETA is honest; chunks/s and how many documents
were already stored (a resumed run skips those) ride along as the bar's postfix. Acknowledged batches and
skipped entries arrive from two threads (committer, reader), hence the lock.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import Any

from ragsvc.retrieval.bulk_ingest import BatchAcknowledged, BatchFailed, BulkReport
from ragsvc.store.files import NoText, Unreadable

MAX_LISTED = 50
"""Skipped entries named one per line at the end; past this, a count."""


class IngestProgress:
    def __init__(self, collection: str, *, total: int) -> None:
        from tqdm import tqdm

        self._bar: Any = tqdm(total=total, desc=f"ingest → {collection}", unit="doc", dynamic_ncols=True)
        self._lock = threading.Lock()
        self._started = time.perf_counter()
        self.num_chunks = 0
        self.num_stored_already = 0
        self.skipped: list[str] = []
        self.no_text: list[str] = []
        """Files with no text, by path."""

    def acknowledged(self, ack: BatchAcknowledged) -> None:
        with self._lock:
            self.num_chunks += ack.num_chunks
            self.num_stored_already += ack.num_documents - ack.num_written
            elapsed = max(time.perf_counter() - self._started, 1e-9)
            self._bar.set_postfix(chunks_per_s=f"{self.num_chunks / elapsed:.1f}",
                                  stored_already=self.num_stored_already, skipped=len(self.skipped), refresh=False)
            self._bar.update(ack.num_documents)

    def skip(self, entry: Unreadable | NoText) -> None:
        with self._lock:
            if isinstance(entry, NoText):
                self.no_text.append(entry.where)
            else:
                self.skipped.append(str(entry))
            self._bar.update(1)

    def failed(self, batch: BatchFailed) -> None:
        with self._lock:
            ids = ", ".join(repr(i) for i in batch.document_ids[:5]) + (" ..." if len(batch.document_ids) > 5 else "")
            self.skipped.append(f"document(s) {ids}: {batch.reason}")
            self._bar.update(len(batch.document_ids))

    def close(self) -> None:
        self._bar.close()


def summary(report: BulkReport, skipped: Sequence[str], no_text: Sequence[str] = ()) -> list[str]:
    """The closing lines: this run's counts and rates, then the files with no text and each skipped entry (at
    most MAX_LISTED of each)."""
    seconds = max(report.seconds, 1e-9)
    lines = [f"this run: {report.num_documents} documents acknowledged ({report.num_written} written, "
             f"{report.num_documents - report.num_written} already stored), {report.num_chunks} chunks in "
             f"{report.seconds:.1f} s ({report.num_written / seconds:.1f} docs/s, "
             f"{report.num_chunks / seconds:.1f} chunks/s, {report.num_commits} transactions)"]
    if no_text:
        lines.append(f"skipped {len(no_text)} file(s) with no text (empty or only whitespace), nothing stored "
                     "from them:")
        lines += [f"  {path}" for path in no_text[:MAX_LISTED]]
        if len(no_text) > MAX_LISTED:
            lines.append(f"  ... and {len(no_text) - MAX_LISTED} more")
    if skipped:
        lines.append(f"skipped {len(skipped)}:")
        lines += [f"  {s}" for s in skipped[:MAX_LISTED]]
        if len(skipped) > MAX_LISTED:
            lines.append(f"  ... and {len(skipped) - MAX_LISTED} more")
    return lines
