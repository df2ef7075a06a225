"""The answer stage: generate an answer from retrieved passages, score it (EM/F1), and let an LLM judge it.

All model calls go through `TextGenerator`, a plain `prompt -> completion` callable. It is the integration
point with `ragsvc.llm`: `text_generator(generator)` adapts any `Generator` (in-process engine, an
OpenAI-compatible server) and the runner takes it as `RunOptions(generator=...)`.
With no generator the stage is skipped and the results say so.

Judged metrics (each a verdict per example; YES = 1, NO = 0):
- faithfulness: is every claim of the answer supported by the retrieved passages?
- citation precision: of the passages the answer cites as [n], the fraction the judge says support it
  (examples citing nothing are left out of this mean and counted in `uncited`).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Protocol

import numpy as np

from ragsvc.evals.answer_metrics import exact_match, token_f1
from ragsvc.evals.loaders import QAExample
from ragsvc.llm.generator import Generator

logger = logging.getLogger(__name__)

_CITATION = re.compile(r"\[(\d+)\]")
_VERDICT = re.compile(r"\b(yes|no)\b", re.IGNORECASE)

ANSWER_PROMPT = (
    "Answer the question using only the passages. Reply with a short answer, then cite the passages you used "
    "as [1], [2].\n\n{passages}\n\nQuestion: {question}\nAnswer:"
)
FAITHFUL_PROMPT = (
    "Passages:\n{passages}\n\nAnswer: {answer}\n\nIs every claim in the answer supported by the passages? "
    "Reply YES or NO.\nVerdict:"
)
CITATION_PROMPT = (
    "Passage:\n{passage}\n\nAnswer: {answer}\n\nDoes the passage support the answer? Reply YES or NO.\nVerdict:"
)


class TextGenerator(Protocol):
    def __call__(self, prompt: str) -> str: ...


def text_generator(generator: Generator, *, max_tokens: int = 64, chat: bool = True) -> TextGenerator:
    """Adapt a `ragsvc.llm` Generator (greedy, short replies) to the prompt -> text callable used here.

    `chat` sends the prompt as one user message, so instruction-tuned models see their chat template (small
    models mostly answer nothing to a bare completion prompt). The reply is cut to its first non-empty line:
    every prompt here asks for a one-line answer or verdict.
    """

    def complete(prompt: str) -> str:
        request = [{"role": "user", "content": prompt}] if chat else prompt
        text = generator.generate(request, max_tokens=max_tokens, temperature=0.0).text
        return next((line.strip() for line in text.splitlines() if line.strip()), "")

    return complete


@dataclass(frozen=True, slots=True)
class AnswerRecord:
    id: str
    answer: str
    em: float
    f1: float
    faithfulness: float | None
    citation_precision: float | None


def parse_verdict(reply: str) -> float | None:
    """1.0 for YES, 0.0 for NO (the first of either word), None when the judge said neither."""
    match = _VERDICT.search(reply)
    return None if match is None else float(match.group(1).lower() == "yes")


def strip_citations(answer: str) -> str:
    return " ".join(_CITATION.sub(" ", answer).split())


def _numbered(passages: Sequence[str]) -> str:
    return "\n".join(f"[{i}] {text}" for i, text in enumerate(passages, start=1))


def citation_precision(answer: str, passages: Sequence[str], judge: TextGenerator) -> float | None:
    cited = sorted({int(n) for n in _CITATION.findall(answer) if 1 <= int(n) <= len(passages)})
    if not cited:
        return None
    plain = strip_citations(answer)
    verdicts = [parse_verdict(judge(CITATION_PROMPT.format(passage=passages[n - 1], answer=plain))) for n in cited]
    return sum(v or 0.0 for v in verdicts) / len(cited)


def answer_example(
    example: QAExample, passages: Sequence[str], *, generate: TextGenerator, judge: TextGenerator | None
) -> AnswerRecord:
    raw = generate(ANSWER_PROMPT.format(passages=_numbered(passages), question=example.question)).strip()
    plain = strip_citations(raw)
    faithful = cited = None
    if judge is not None:
        faithful = parse_verdict(judge(FAITHFUL_PROMPT.format(passages=_numbered(passages), answer=plain)))
        cited = citation_precision(raw, passages, judge)
    return AnswerRecord(example.id, raw, exact_match(plain, example.answers), token_f1(plain, example.answers),
                        faithful, cited)


def run_answer_stage(
    examples: Sequence[QAExample],
    retrieve: Callable[[QAExample], list[str]],
    *,
    generate: TextGenerator,
    judge: TextGenerator | None = None,
) -> dict[str, object]:
    """Answer every example from the passages `retrieve` returns; means plus per-example records."""
    records = [answer_example(ex, retrieve(ex), generate=generate, judge=judge) for ex in examples]

    def mean(values: list[float | None]) -> float | None:
        kept = [v for v in values if v is not None]
        return float(np.mean(kept)) if kept else None

    return {
        "num_examples": len(records),
        "metrics": {
            "em": mean([r.em for r in records]),
            "f1": mean([r.f1 for r in records]),
            "faithfulness": mean([r.faithfulness for r in records]),
            "citation_precision": mean([r.citation_precision for r in records]),
        },
        "uncited": sum(1 for r in records if r.citation_precision is None) if judge is not None else None,
        "per_example": [asdict(r) for r in records],
    }
