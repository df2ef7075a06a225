"""Opening a collection's lexical index: load it, or rebuild it from the catalog, then catch up.

The same rules as the ANN shards: the files are derived state. A folder that fails to load (IndexCorrupt) or
was written with another tokenizer or BM25 parameters is rebuilt from the catalog. After a load, chunks
above the saved watermark are replayed (added after the last save), and chunks the index holds that the
catalog no longer has (deleted after the last save) are removed, so BM25's corpus statistics match the
catalog exactly, not just the hits.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np

from ragsvc.errors import IndexCorrupt
from ragsvc.index.lexical_index import Bm25Params, LexicalIndex
from ragsvc.index.lexical_tokens import TokenizerConfig
from ragsvc.index.source import TextSource

logger = logging.getLogger(__name__)


def open_lexical(directory: Path, source: TextSource, *, tokenizer: TokenizerConfig | None = None,
                 params: Bm25Params | None = None) -> LexicalIndex:
    wanted_tokenizer = tokenizer or TokenizerConfig()
    wanted_params = params or Bm25Params()
    index: LexicalIndex | None = None
    try:
        index = LexicalIndex.load(directory)
    except IndexCorrupt as exc:
        logger.warning("lexical index in %s failed to load (%s); rebuilding it from the catalog", directory, exc)
    if index is not None and (index.tokenizer_config != wanted_tokenizer or index.params != wanted_params):
        logger.info("lexical index in %s was built with other settings; rebuilding it", directory)
        index = None
    if index is None:
        shutil.rmtree(directory, ignore_errors=True)
        index = LexicalIndex(tokenizer=wanted_tokenizer, params=wanted_params)
    else:
        _drop_deleted(index, source)
    replayed = 0
    for ids, texts in source.iter_texts(after_id=index.watermark):
        index.add(ids, texts)
        replayed += len(ids)
    if replayed:
        logger.info("lexical index: %d chunks added from the catalog", replayed)
    return index


def _drop_deleted(index: LexicalIndex, source: TextSource) -> None:
    held = index.live_ids()
    if not len(held):
        return
    live = source.live_ids(up_to=index.watermark)
    gone = np.setdiff1d(held, live, assume_unique=True)
    if len(gone):
        index.delete(gone)
        logger.info("lexical index: %d chunks deleted since its last save removed", len(gone))
