"""Text -> terms for the BM25 lexical index: bm25s's tokenizer with PyStemmer, configured by a stored config.

The same configuration must tokenize documents at ingest and queries at search time, across restarts, or
query terms silently stop matching. So the config is a frozen dataclass written into the index manifest
(`to_dict` / `from_dict`), and a reloaded index rebuilds its tokenizer from it rather than from settings.

The splitting, lowercasing and stopword removal are bm25s's (`bm25s.tokenize`, the scikit-learn
CountVectorizer pattern); stemming is PyStemmer's Snowball. Both are deterministic. We ask bm25s for
strings, not ids: its id assignment is per call (and iterates a set), so the index keeps its own vocabulary.
Stopwords are matched before stemming, as bm25s does.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Any

import bm25s
import Stemmer

DEFAULT_TOKEN_PATTERN = r"(?u)\b\w\w+\b"


@dataclass(frozen=True, slots=True)
class TokenizerConfig:
    stemmer: str | None = "english"
    """A PyStemmer (Snowball) algorithm name, e.g. `english`, `porter`, `german`; None to keep words whole."""
    stopwords: str | None = "english"
    """A bm25s stopword list name (`english`, `en_plus`, `german`, ...); None to keep every word."""
    lower: bool = True
    token_pattern: str = DEFAULT_TOKEN_PATTERN
    """Regex whose matches are the tokens (default: runs of 2+ word characters, like scikit-learn)."""

    def __post_init__(self) -> None:
        if self.stemmer is not None and self.stemmer not in Stemmer.algorithms():
            raise ValueError(f"unknown stemmer {self.stemmer!r}; use one of {sorted(Stemmer.algorithms())} or None")
        try:  # bm25s resolves stopword list names itself; ask it now rather than at the first ingest
            bm25s.tokenize([""], stopwords=self.stopwords or [], token_pattern=self.token_pattern,
                           show_progress=False)
        except (ValueError, re.error) as exc:
            raise ValueError(f"tokenizer config rejected by bm25s ({exc}); use a stopword list name bm25s "
                             "knows (english, en_plus, german, ...) or None, and a valid regex") from exc

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TokenizerConfig:
        """Rebuild from a manifest; ValueError / TypeError when the stored config is unusable."""
        return cls(**data)


class LexicalTokenizer:
    """Turns texts into lists of terms. Cheap to build; holds one PyStemmer instance (it caches stems)."""

    def __init__(self, config: TokenizerConfig | None = None) -> None:
        self.config = config or TokenizerConfig()
        self._stemmer = None if self.config.stemmer is None else Stemmer.Stemmer(self.config.stemmer)

    def tokenize(self, texts: list[str]) -> list[list[str]]:
        """One list of terms per text, in text order (repeats kept: they are the term frequencies)."""
        if not texts:
            return []
        terms: list[list[str]] = bm25s.tokenize(  # lists of str when return_ids=False
            texts,
            lower=self.config.lower,
            token_pattern=self.config.token_pattern,
            stopwords=[] if self.config.stopwords is None else self.config.stopwords,
            stemmer=self._stemmer,
            return_ids=False,
            show_progress=False,
        )
        return terms
