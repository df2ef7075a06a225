"""The suite's answer stage: which retrieval feeds it, and which of the two ways of answering runs.

- `[answer] strategies` set: the strategies of `answer_strategies` (none | single | FLARE) through
  ragsvc.answer, on the run's language model (a `Generator`: FLARE needs token logprobs).
- otherwise: the judged single-shot stage of `answer_stage` (EM/F1, faithfulness, citation precision) on any
  prompt -> text callable.

The retriever is the one of `[answer] config` (default the baseline); its document scores become the
Answerer's hits, each a whole document, so a passage number maps back to a corpus id. A retrieval returns
the top_k of them: `single` and FLARE's first retrieval read the same top_k, and a later FLARE retrieval adds
those of its own top_k the model has not read (none when its query re-finds the passages already shown).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from ragsvc.answer.answerer import AnswerOptions
from ragsvc.answer.types import FlareOptions
from ragsvc.evals.answer_stage import TextGenerator, run_answer_stage, text_generator
from ragsvc.evals.answer_strategies import run_strategies
from ragsvc.evals.configs import Retriever, RunContext
from ragsvc.evals.kinds import config_kind
from ragsvc.evals.loaders import RetrievalDataset, load_qa
from ragsvc.evals.pipeline_retriever import model_label
from ragsvc.evals.suite import Suite
from ragsvc.llm.generator import Generator
from ragsvc.types import ChunkId, DocumentId, Hit

logger = logging.getLogger(__name__)

SKIPPED_NO_GENERATOR = (
    "no generator configured: `ragsvc eval run --generator-model smollm2` (in-process) or --generator-url URL "
    "(OpenAI-compatible server); from Python, RunOptions(llm=InProcessGenerator...) or "
    "RunOptions(generator=text_generator(...))"
)


def _answer_retriever(suite: Suite, ctx: RunContext, built: dict[str, Retriever]) -> tuple[str, Retriever]:
    assert suite.answer is not None
    name = suite.answer.config or suite.baseline
    config = next(c for c in suite.configs if c.name == name)
    retriever = built.get(name) or config_kind(config.kind).prepare(config, ctx)  # type: ignore[union-attr]
    built[name] = retriever  # so the runner closes it with the others
    return name, retriever


def _passage_hits(dataset: RetrievalDataset, scores: dict[str, float], top_k: int) -> list[Hit]:
    """A retriever's document scores as the Answerer's hits: whole documents, numbered by corpus position."""
    position = {doc_id: i for i, doc_id in enumerate(dataset.corpus)}
    top = sorted(scores, key=lambda d: -scores[d])[:top_k]
    return [Hit(ChunkId(position[d]), DocumentId(d), dataset.corpus[d].full_text, scores[d]) for d in top]


def answer_suite(suite: Suite, dataset: RetrievalDataset, ctx: RunContext, built: dict[str, Retriever], *,
                 generate: TextGenerator | None, judge: TextGenerator | None, llm: Generator | None,
                 progress: Callable[[str], Callable[[int, int], None]] | None = None) -> dict[str, Any] | None:
    """The suite's [answer] section, or None without one; `built` gains the retriever it used (to be closed).
    `progress` names a callback per strategy, as the runner's does per retrieval config."""
    answer = suite.answer
    if answer is None:
        return None
    generate = generate or (text_generator(llm) if llm is not None else None)
    if generate is None or (answer.strategies and llm is None):
        logger.info("answer stage skipped: no generator configured")
        return {"skipped": SKIPPED_NO_GENERATOR}
    name, retriever = _answer_retriever(suite, ctx, built)
    qrels_path = suite.dataset_path / "qrels" / f"{suite.dataset.split}.tsv"
    examples = load_qa(suite.dataset_path / answer.qa_file, qrels_path=qrels_path if qrels_path.is_file() else None,
                       max_examples=answer.max_examples, skip_examples=answer.skip_examples)
    embedder = ctx.store.embedder
    if answer.strategies:
        assert llm is not None
        one_at_a_time = threading.Lock()  # questions are answered concurrently; HF tokenizers are not thread-safe

        def retrieve_text(query: str) -> tuple[list[Hit], dict[str, float]]:
            with one_at_a_time:
                started = time.perf_counter()
                scores = retriever.search("", query, embedder.embed_query(query))
                hits = _passage_hits(dataset, scores, answer.top_k)
                return hits, {"total_ms": (time.perf_counter() - started) * 1e3}

        flare = FlareOptions(**answer.flare.model_dump())
        stage = run_strategies(examples, answer.strategies, llm, retrieve_text, flare=flare,
                               options=AnswerOptions(max_tokens=answer.max_tokens,
                                                     context_tokens=answer.context_tokens, style=answer.style,
                                                     passages_per_retrieval=answer.top_k),
                               concurrency=answer.concurrency, progress=progress)
        return {"config": name, "model": model_label(llm.model), **stage}

    def retrieve(example: Any) -> list[str]:
        scores = retriever.search(example.id, example.question, embedder.embed_query(example.question))
        return [hit.text for hit in _passage_hits(dataset, scores, answer.top_k)]

    stage = run_answer_stage(examples, retrieve, generate=generate, judge=judge or generate)
    return {"config": name, **stage}
