"""Answer metrics: exact match and token F1 with the SQuAD v1.1 normalisation, and answer match.

Normalisation (the official SQuAD evaluate script): lower-case, drop punctuation, drop the articles
a/an/the, collapse whitespace. Against several gold answers the best score counts.

Answer match (the "accuracy" of generative open-domain QA papers, e.g. FLARE's and Self-RAG's): the gold answer
occurs in the prediction as a run of whole normalised words. Models that answer in a sentence ("No, they
were not of the same nationality") score 0 EM against "no" however right they are; match scores them 1.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Sequence

_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)
_PUNCTUATION = frozenset(string.punctuation)


def normalize_answer(text: str) -> str:
    text = text.lower()
    text = "".join(ch for ch in text if ch not in _PUNCTUATION)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def exact_match(prediction: str, answers: Sequence[str]) -> float:
    if not answers:
        raise ValueError("exact_match needs at least one gold answer")
    pred = normalize_answer(prediction)
    return float(any(pred == normalize_answer(gold) for gold in answers))


def _f1(prediction: str, gold: str) -> float:
    pred_tokens, gold_tokens = normalize_answer(prediction).split(), normalize_answer(gold).split()
    if not pred_tokens or not gold_tokens:
        # SQuAD: both empty is a match, one empty is not.
        return float(pred_tokens == gold_tokens)
    common = Counter(pred_tokens) & Counter(gold_tokens)
    num_same = sum(common.values())
    if num_same == 0:
        return 0.0
    precision, recall = num_same / len(pred_tokens), num_same / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def token_f1(prediction: str, answers: Sequence[str]) -> float:
    if not answers:
        raise ValueError("token_f1 needs at least one gold answer")
    return max(_f1(prediction, gold) for gold in answers)


def answer_match(prediction: str, answers: Sequence[str]) -> float:
    """1.0 when some gold answer's normalised words occur, in order and adjacent, in the prediction's."""
    if not answers:
        raise ValueError("answer_match needs at least one gold answer")
    pred = normalize_answer(prediction).split()
    for gold in answers:
        words = normalize_answer(gold).split()
        if words and any(pred[i: i + len(words)] == words for i in range(len(pred) - len(words) + 1)):
            return 1.0
    return 0.0
