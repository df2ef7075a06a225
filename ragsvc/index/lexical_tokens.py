"""Text -> terms for the BM25 lexical index: bm25s's tokenizer with PyStemmer, configured by a stored config.

The same configuration must tokenize documents at ingest and queries at search time, across restarts, or
query terms silently stop matching. So the config is a frozen dataclass written into the index manifest
(`to_dict` / `from_dict`), and a reloaded index rebuilds its tokenizer from it rather than from settings.

The splitting, lowercasing and stopword removal are bm25s's (`bm25s.tokenize`, the scikit-learn
CountVectorizer pattern); stemming is PyStemmer's Snowball. Both are deterministic. We ask bm25s for
strings, not ids: its id assignment is per call (and iterates a set), so the index keeps its own vocabulary.
Stopwords are matched before stemming, as bm25s does.

Chinese and Japanese are written without spaces, so the word pattern would make a whole clause one term and a
query would match only the same clause. With `cjk_bigrams` (the default) each run of kana and ideographs
becomes its overlapping character pairs, the usual unit for BM25 over these scripts (Lucene's CJK analyzer
does the same), so a query's words match inside longer runs. A run of one character has no pair and gives no
term, like a one-letter word.

Before any of that, texts are put in one Unicode form (`unicode_form`, NFKC by default): the same word
typed with a composed "é" or with "e" plus a combining accent, in full-width letters, or with a ligature
("ﬁ") would otherwise be different terms, or be cut in two where the combining mark is not a word character,
so a document would not match a query that reads exactly like it.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import asdict, dataclass
from typing import Any, Literal, get_args

import bm25s
import Stemmer

from ragsvc.cjk import CJK_CHARS

DEFAULT_TOKEN_PATTERN = r"(?u)\b\w\w+\b"
UnicodeForm = Literal["NFC", "NFD", "NFKC", "NFKD"]
UNICODE_FORMS: tuple[str, ...] = get_args(UnicodeForm)
_CJK_RUN = re.compile(f"[{CJK_CHARS}]{{2,}}")
"""Two or more kana or ideographs in a row."""


@dataclass(frozen=True, slots=True)
class TokenizerConfig:
    stemmer: str | None = "english"
    """A PyStemmer (Snowball) algorithm name, e.g. `english`, `porter`, `german`; None to keep words whole."""
    stopwords: str | None = "english"
    """A bm25s stopword list name (`english`, `en_plus`, `german`, ...); None to keep every word."""
    lower: bool = True
    token_pattern: str = DEFAULT_TOKEN_PATTERN
    """Regex whose matches are the tokens (default: runs of 2+ word characters, like scikit-learn)."""
    cjk_bigrams: bool = True
    """Split runs of kana and ideographs into overlapping character pairs before matching the pattern."""
    unicode_form: UnicodeForm | None = "NFKC"
    """The Unicode normal form texts are put in first (one of UNICODE_FORMS), or None to take them as given."""

    def __post_init__(self) -> None:
        if self.unicode_form is not None and self.unicode_form not in UNICODE_FORMS:
            raise ValueError(f"unknown unicode_form {self.unicode_form!r}; use one of {UNICODE_FORMS} or None")
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
        """Rebuild from a manifest; ValueError / TypeError when the stored config is unusable. A manifest from
        before `cjk_bigrams` or `unicode_form` existed was built without them."""
        return cls(**{"cjk_bigrams": False, "unicode_form": None, **data})


class LexicalTokenizer:
    """Turns texts into lists of terms. Cheap to build; holds one PyStemmer instance (it caches stems)."""

    def __init__(self, config: TokenizerConfig | None = None) -> None:
        self.config = config or TokenizerConfig()
        self._stemmer = None if self.config.stemmer is None else Stemmer.Stemmer(self.config.stemmer)

    def tokenize(self, texts: list[str]) -> list[list[str]]:
        """One list of terms per text, in text order (repeats kept: they are the term frequencies)."""
        if not texts:
            return []
        form = self.config.unicode_form
        if form is not None:  # isascii: ASCII is already in every form
            texts = [text if text.isascii() else unicodedata.normalize(form, text) for text in texts]
        if self.config.cjk_bigrams:
            texts = [cjk_bigrams(text) for text in texts]
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


def cjk_bigrams(text: str) -> str:
    """`text` with each run of kana and ideographs replaced by its overlapping pairs, space-separated."""
    if text.isascii() or not _CJK_RUN.search(text):  # isascii: the common case, at memory speed
        return text
    return _CJK_RUN.sub(lambda m: " " + " ".join(m[0][i: i + 2] for i in range(len(m[0]) - 1)) + " ", text)
