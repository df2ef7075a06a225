"""Scripts written without spaces between words: the one character class the text rules that care share.

Kana and CJK ideographs (with their compatibility forms and half-width katakana). Hangul is not here: Korean
puts spaces between words, so the ordinary word rules serve it.
"""

from __future__ import annotations

CJK_CHARS = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uff66-\uff9f"
"""Ranges for a regex character class: `f"[{CJK_CHARS}]"`."""
