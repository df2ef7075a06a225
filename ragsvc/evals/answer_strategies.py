"""Answer strategies on the same questions, through the product's own answer path (`ragsvc.answer.Answerer`):

    none     closed book: the question alone, no passages (what the model knows by itself)
    single   retrieve once for the question, then write the answer (Answerer without FLARE)
    flare    FLARE, direct variant: write sentence by sentence, retrieve again when a token is unsure

`single` and `flare` share the Answerer's prompt, generator settings and retrieval, so their difference is
FLARE's; `none` needs its own prompt (the Answerer's asks about passages, and told that there are none a model
says so instead of answering). Scores are SQuAD EM and token F1, and answer match (the gold answer's words
inside the answer), of the answer's first non-empty line with citation markers removed: HotpotQA answers are
short spans, and a model that adds a sentence of explanation after the span should not lose the span. A leading
label ("Answer:", "The answer is:") is dropped first, and a line that is only a label gives way to the next
(small models write "The answer is:" on a line of its own), as the FLARE paper's scorer reads what follows
"the answer is". Under the `reasoning` style (ragsvc/answer/reasoning.py) every strategy writes a sentence per
fact and is scored on what follows its "So the answer is"; `none` gets the same instructions and examples,
without passages.
`support_recall` is the fraction of the question's supporting passages among the passages the model was shown
(what FLARE's extra retrievals can add).

Questions are answered `concurrency` at a time: an in-process engine batches concurrent requests (continuous
batching), which on a CPU is several times the throughput of one request at a time. Latency per question is
then the wall time under that load, as a server would see it.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import Any, Literal, get_args

import numpy as np

from ragsvc.answer.answerer import Answerer, AnswerOptions
from ragsvc.answer.reasoning import closed_book_prompt, final_answer, through_final_sentence
from ragsvc.answer.types import FlareOptions
from ragsvc.evals.answer_metrics import answer_match, exact_match, token_f1
from ragsvc.evals.answer_stage import strip_citations
from ragsvc.evals.loaders import QAExample
from ragsvc.evals.stats import paired_difference_ci, paired_permutation_test, percentiles
from ragsvc.llm.generator import Generator
from ragsvc.types import Hit

Strategy = Literal["none", "single", "flare"]
STRATEGIES: tuple[str, ...] = get_args(Strategy)
Retrieve = Callable[[str], tuple[list[Hit], dict[str, float]]]

CLOSED_BOOK_PROMPT = "Answer the question with a short answer.\n\nQuestion: {question}\n\nAnswer:"
SHORT_CLOSED_BOOK_PROMPT = ("Answer the question with the answer only: a short phrase such as a name, a date or a "
                            "number, or yes or no; no explanation.\n\nQuestion: {question}\n\nAnswer:")
"""`none` under AnswerOptions(style="short"): the same request for the answer alone as the Answerer's short
instructions, so the three strategies differ in retrieval only."""


@dataclass(frozen=True, slots=True)
class StrategyRecord:
    id: str
    answer: str
    """The model's whole answer."""
    scored: str
    """What EM and F1 compared with the gold answers (first line, citations removed)."""
    em: float
    f1: float
    match: float
    """The gold answer's words occur in the scored text (see answer_metrics.answer_match)."""
    support_recall: float | None
    """Supporting passages shown / supporting passages; None without retrieval or without supporting ids."""
    retrievals: int
    completion_tokens: int
    total_ms: float


_ANSWER_LABEL = re.compile(r"^\W*(?:so\s+)?(?:the\s+)?(?:final\s+|short\s+)?answer\b(?:\s+is\b)?\s*[:\-]?\s*",
                           re.IGNORECASE)


def short_answer(text: str) -> str:
    """What follows "the answer is" when the text reasons its way there (the `reasoning` style's closing
    sentence); otherwise the answer's first line that says something once a leading answer label is dropped.
    Citations removed either way."""
    text = final_answer(text) or text
    for line in text.splitlines():
        kept = strip_citations(_ANSWER_LABEL.sub("", line.strip(), count=1))
        if kept:
            return kept
    return ""


def _record(example: QAExample, text: str, *, shown: set[str] | None, retrievals: int, tokens: int,
            started: float) -> StrategyRecord:
    scored = short_answer(text)
    support = None
    if shown is not None and example.supporting_ids:
        support = len(shown & set(example.supporting_ids)) / len(set(example.supporting_ids))
    return StrategyRecord(example.id, text.strip(), scored, exact_match(scored, example.answers),
                          token_f1(scored, example.answers), answer_match(scored, example.answers), support,
                          retrievals, tokens, (time.perf_counter() - started) * 1000)


def answer_one(strategy: str, example: QAExample, generator: Generator, retrieve: Retrieve, *,
               options: AnswerOptions, flare: FlareOptions) -> StrategyRecord:
    started = time.perf_counter()
    if strategy == "none":
        gen = generator.generate(_closed_book(example.question, options.style), max_tokens=options.max_tokens,
                                 temperature=0.0)
        text = through_final_sentence(gen.text) if options.style == "reasoning" else gen.text
        return _record(example, text, shown=None, retrievals=0, tokens=gen.usage.completion_tokens,
                       started=started)
    answer = Answerer(generator, retrieve, options=options).answer(
        example.question, flare=flare if strategy == "flare" else None)
    shown = {str(c.document_id) for c in answer.passages}
    return _record(example, answer.text, shown=shown, retrievals=len(answer.retrievals),
                   tokens=answer.completion_tokens, started=started)


def _closed_book(question: str, style: str) -> str | list[dict[str, str]]:
    if style == "reasoning":  # the same instructions and examples as the Answerer's, without passages
        return closed_book_prompt(question)
    template = SHORT_CLOSED_BOOK_PROMPT if style == "short" else CLOSED_BOOK_PROMPT
    return template.format(question=question.strip())


Progress = Callable[[int, int], None]
"""`(answered, total)` after each question, as the CLI's bars take it."""


def run_strategy(strategy: str, examples: Sequence[QAExample], generator: Generator, retrieve: Retrieve, *,
                 options: AnswerOptions, flare: FlareOptions, concurrency: int = 1,
                 progress: Progress | None = None) -> list[StrategyRecord]:
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown answer strategy {strategy!r}; use one of {', '.join(STRATEGIES)}")
    done = 0
    counted = threading.Lock()

    def one(example: QAExample) -> StrategyRecord:
        nonlocal done
        record = answer_one(strategy, example, generator, retrieve, options=options, flare=flare)
        if progress is not None:
            with counted:
                done += 1
                progress(done, len(examples))
        return record

    if concurrency <= 1:
        return [one(ex) for ex in examples]
    with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix=f"answer-{strategy}") as pool:
        return list(pool.map(one, examples))  # results in question order


def _mean(values: Sequence[float | None]) -> float | None:
    kept = [v for v in values if v is not None]
    return round(float(np.mean(kept)), 4) if kept else None


def summarise(records: Sequence[StrategyRecord], wall_s: float) -> dict[str, Any]:
    return {
        "metrics": {"em": _mean([r.em for r in records]), "f1": _mean([r.f1 for r in records]),
                    "match": _mean([r.match for r in records]),
                    "support_recall": _mean([r.support_recall for r in records])},
        "retrievals_mean": _mean([float(r.retrievals) for r in records]),
        "completion_tokens_mean": _mean([float(r.completion_tokens) for r in records]),
        "latency_ms": percentiles([r.total_ms for r in records]),
        "wall_s": round(wall_s, 2),
        "per_example": [asdict(r) for r in records],
    }


def paired(base: Sequence[StrategyRecord], other: Sequence[StrategyRecord], metric: str) -> dict[str, Any]:
    """Δ mean(other - base) of `metric` over the same questions, its bootstrap CI and permutation p."""
    xs, ys = [getattr(r, metric) for r in base], [getattr(r, metric) for r in other]
    low, high = paired_difference_ci(xs, ys)
    return {"delta": round(float(np.mean(ys) - np.mean(xs)), 4), "ci": [round(low, 4), round(high, 4)],
            "p": paired_permutation_test(xs, ys)}


def compare_all(records: Mapping[str, Sequence[StrategyRecord]]) -> dict[str, dict[str, Any]]:
    """Every later strategy against every earlier one ("flare vs single"), per metric, on the same questions."""
    names = list(records)
    return {f"{b} vs {a}": {m: paired(records[a], records[b], m) for m in ("em", "f1", "match")}
            for i, a in enumerate(names) for b in names[i + 1:]}


def run_strategies(examples: Sequence[QAExample], strategies: Sequence[str], generator: Generator,
                   retrieve: Retrieve, *, options: AnswerOptions, flare: FlareOptions,
                   concurrency: int = 1, progress: Callable[[str], Progress] | None = None) -> dict[str, Any]:
    """Every strategy on every example, then every pair of strategies compared question by question.
    `progress` gives each strategy its callback, by a stage name ("answers: flare")."""
    records: dict[str, list[StrategyRecord]] = {}
    summary: dict[str, Any] = {}
    for strategy in strategies:
        started = time.perf_counter()
        records[strategy] = run_strategy(strategy, examples, generator, retrieve, options=options, flare=flare,
                                         concurrency=concurrency,
                                         progress=progress(f"answers: {strategy}") if progress else None)
        summary[strategy] = summarise(records[strategy], time.perf_counter() - started)
    return {"num_examples": len(examples), "strategies": summary, "paired": compare_all(records),
            "flare": asdict(flare), "max_tokens": options.max_tokens, "answer_style": options.style,
            "concurrency": concurrency}
