"""Question -> Answer: retrieve once and write the answer, or write it sentence by sentence with FLARE.

The answerer knows nothing of collections or indexes: it gets a `retrieve(query) -> (hits, timings)` callable
(the retrieval pipeline bound to a collection and its options) and a Generator. Every model call is
streamed, so each round records its time to first token next to the prompt tokens the server's prefix cache
served (`Usage.cached_tokens`). Events go to an optional callback as they happen, which is what the API's
server-sent events carry.

A generator that fails mid-answer raises UpstreamError (502) or UpstreamTimeout (504); nothing is written
anywhere, so there is no half-finished state to clean up.
"""

from __future__ import annotations

import logging
import time
from collections import abc
from collections.abc import Callable
from contextlib import closing
from dataclasses import dataclass, field
from typing import Literal

from ragsvc.answer.flare import (
    Sentence,
    cut_sentence,
    low_confidence_spans,
    low_tokens,
    masked_query,
    min_probability,
    needs_retrieval,
    surer,
)
from ragsvc.answer.prompt import ANSWER_STYLES, AnswerStyle, PassageLog, answer_prompt, query_question_prompt
from ragsvc.answer.reasoning import (
    FINAL_LABEL,
    final_answer,
    final_line,
    has_final_sentence,
    reasoning_query,
    through_final_sentence,
)
from ragsvc.answer.types import (
    MAX_ANSWER_TOKENS,
    NO_PASSAGES,
    Answer,
    FlareOptions,
    GenerationRound,
    RetrievalRound,
)
from ragsvc.errors import InvalidInput, RagsvcError, UpstreamError, UpstreamTimeout
from ragsvc.llm.generator import (
    Generation,
    GenerationChunk,
    Generator,
    Prompt,
    TokenLogprob,
    Usage,
    streamed_usage,
)
from ragsvc.llm.repetition import RepeatWatch, repeat_start, without_repeat
from ragsvc.types import Hit

logger = logging.getLogger(__name__)

Retrieve = Callable[[str], tuple[list[Hit], dict[str, float]]]
MAX_QUESTION_CHARS = 4096
FINAL_TOKENS = 24
"""Tokens for completing a missing "So the answer is X." (the answer alone is a few words)."""
MAX_UNBUDGETED = 1 << 30


@dataclass(frozen=True, slots=True)
class AnswerEvent:
    """Something that happened while answering: a retrieval, a piece of answer text, a finished round."""

    kind: Literal["retrieval", "text", "round"]
    retrieval: RetrievalRound | None = None
    text: str = ""
    generation: GenerationRound | None = None


OnEvent = Callable[[AnswerEvent], None]
Until = Callable[[str, list[TokenLogprob]], bool]
"""Stops a model call early once it returns True for the text and tokens so far (the request is aborted)."""


@dataclass(frozen=True, slots=True)
class AnswerOptions:
    max_tokens: int = 256
    """Most answer tokens (single retrieval; FLARE has its own in FlareOptions)."""
    context_tokens: int = 1024
    """Token budget of the passages from the first retrieval."""
    round_context_tokens: int = 384
    """Token budget of the passages each later FLARE retrieval may add."""
    max_context_tokens: int = 2048
    """Token budget of all passages together."""
    passages_per_retrieval: int | None = None
    """How many of a retrieval's top hits it shows (None: every hit); those already shown are not repeated, and
    a later retrieval whose top hits are all shown adds nothing (see `PassageLog.add`)."""
    style: AnswerStyle = "full"
    """full: the model's own words; short: the answer alone (a name, a date, yes/no), as QA datasets score it.
    With FLARE a short answer is one look-ahead, and its retrieval query is the question plus the answer's
    confident words (see `Answerer._queries`). reasoning: one sentence per fact, then "So the answer is X"
    (answer/reasoning.py); the answer ends with that sentence and `Answer.final` holds X."""

    def __post_init__(self) -> None:
        if self.passages_per_retrieval is not None and not 1 <= self.passages_per_retrieval <= 100:
            raise InvalidInput(f"passages_per_retrieval must be in [1, 100], got {self.passages_per_retrieval}")
        if self.style not in ANSWER_STYLES:
            raise InvalidInput(f"answer style must be one of {', '.join(ANSWER_STYLES)}, got {self.style!r}")
        if not 1 <= self.max_tokens <= MAX_ANSWER_TOKENS:
            raise InvalidInput(f"max_tokens must be in [1, {MAX_ANSWER_TOKENS}], got {self.max_tokens}")
        for name in ("context_tokens", "round_context_tokens", "max_context_tokens"):
            if not 16 <= getattr(self, name) <= 32768:
                raise InvalidInput(f"{name} must be in [16, 32768], got {getattr(self, name)}")


class Answerer:
    def __init__(self, generator: Generator, retrieve: Retrieve, *, options: AnswerOptions = AnswerOptions(),
                 on_event: OnEvent | None = None) -> None:
        self.generator = generator
        self.retrieve = retrieve
        self.options = options
        self._emit = on_event or (lambda event: None)

    def answer(self, question: str, *, flare: FlareOptions | None = None) -> Answer:
        question = check_question(question)
        started = time.perf_counter()
        run = _Run(question, PassageLog(self.options.max_context_tokens), theta=flare.theta if flare else None)
        self._retrieve(run, question, round_=0, reason="question", max_tokens=self.options.context_tokens)
        if not run.passages.citations:
            # nothing to ground an answer in (a filter no chunk matches, a lexical query of unindexed words):
            # what the model wrote would be its own recollection presented as a sourced answer
            finish = NO_PASSAGES
        else:
            finish = self._single(run) if flare is None else self._flare(run, flare)
        if self.options.style == "reasoning" and run.answer.strip() and final_answer(run.answer) is None:
            self._finish_reasoning(run)
        text = run.answer.strip()
        total_ms = (time.perf_counter() - started) * 1000
        retrieval_ms = sum(r.timings_ms.get("total_ms", 0.0) for r in run.retrievals)
        generation_ms = sum(g.total_ms for g in run.generations)
        final = final_answer(text) if self.options.style == "reasoning" else None
        return Answer(text=text, citations=run.passages.cited(text), passages=list(run.passages.citations),
                      retrievals=run.retrievals, generations=run.generations, finish_reason=finish,
                      timings_ms={"retrieval_ms": retrieval_ms, "generation_ms": generation_ms, "total_ms": total_ms},
                      final=final)

    # --- the two strategies -------------------------------------------------------------------------------

    def _single(self, run: _Run) -> str:
        """One model call, stopped early once the answer loops (llm/repetition.py) and cut before the
        repeat; the finish reason then says "repetition"."""
        prompt = answer_prompt(run.question, run.passages, "", style=self.options.style)
        reasoning = self.options.style == "reasoning"
        looping = RepeatWatch()

        def until(text: str, tokens: list[TokenLogprob]) -> bool:
            # reasoning ends with its "So the answer is X." sentence; what a model adds after it is not the answer
            return (reasoning and has_final_sentence(text)) or looping(text)

        generation = self._generate(run, prompt, kind="answer", round_=1, max_tokens=self.options.max_tokens,
                                    stream_text=True, until=until)
        text, repeated = without_repeat(through_final_sentence(generation.text) if reasoning else generation.text)
        run.answer = text
        if repeated:
            return "repetition"
        return "length" if generation.finish_reason == "length" else "stop"

    def _flare(self, run: _Run, flare: FlareOptions) -> str:
        """Look-ahead rounds until the model stops, the rounds run out, or flare.max_tokens have been generated.

        The budget counts every token the model generated, not only those kept: look-ahead text past the
        sentence, drafts a regeneration replaced, and written queries cost the same decoding as answer text,
        and counting only kept tokens let one request decode max_rounds x 2 x lookahead_tokens (16k) for an
        answer of a few hundred. A reasoning answer keeps back what its closing sentence needs."""
        run.token_budget = flare.max_tokens
        reserve = min(FINAL_TOKENS, flare.max_tokens // 4) if self.options.style == "reasoning" else 0
        for round_ in range(1, flare.max_rounds + 1):
            budget = min(flare.lookahead_tokens, run.tokens_left() - reserve)
            if budget < 1:
                return "length"
            generation, sentence = self._lookahead(run, round_, budget, flare, kind="lookahead")
            # regenerate only when retrieval added passages: the same prompt gives the same sentence (greedy)
            if needs_retrieval(sentence.tokens, flare.theta) and self._retrieve_for(run, sentence, flare, round_):
                budget = min(flare.lookahead_tokens, run.tokens_left() - reserve)
                regenerated = self._lookahead(run, round_, budget, flare, kind="regenerate") if budget >= 1 else None
                if regenerated is not None and (flare.accept == "always" or surer(regenerated[1].tokens,
                                                                                  sentence.tokens)):
                    generation, sentence = regenerated
            if not sentence.text.strip():
                return "stop"
            if repeat_start(run.answer + sentence.text) is not None:
                return "repetition"  # the model is looping: every later round would write this sentence again
            run.answer += sentence.text
            self._emit(AnswerEvent("text", text=sentence.text))
            if generation.finish_reason == "stop" and len(sentence.tokens) == len(generation.tokens):
                return "stop"
            if self.options.style == "reasoning" and has_final_sentence(run.answer + "\n"):
                return "stop"
        return "length" if run.tokens_left() - reserve < 1 else "rounds"

    def _finish_reasoning(self, run: _Run) -> None:
        """Reasoning that stopped (end of turn, rounds, tokens) before "So the answer is X": write the label
        and let the model complete the sentence from all it has read and written."""
        if run.tokens_left() < 1:
            return  # FLARE's budget is spent (it keeps FINAL_TOKENS back, so only a budget under 4 does this)
        so_far = f"{run.answer.rstrip()} {FINAL_LABEL}"
        prompt = answer_prompt(run.question, run.passages, so_far, style=self.options.style)
        generation = self._generate(run, prompt, kind="final", round_=len(run.generations) + 1,
                                    max_tokens=min(FINAL_TOKENS, run.tokens_left()), until=lambda text, _: "\n" in text)
        added = f" {FINAL_LABEL}{final_line(generation.text)}"
        run.answer = run.answer.rstrip() + added
        self._emit(AnswerEvent("text", text=added))

    def _lookahead(self, run: _Run, round_: int, budget: int, flare: FlareOptions, *,
                   kind: Literal["lookahead", "regenerate"]) -> tuple[Generation, Sentence]:
        prompt = answer_prompt(run.question, run.passages, run.answer, style=self.options.style)
        until = _sentence_written if flare.stop_at_sentence else None
        generation = self._generate(run, prompt, kind=kind, round_=round_, max_tokens=budget, logprobs=True,
                                    until=until)
        return generation, cut_sentence(generation.tokens, finished=generation.finish_reason == "stop")

    def _retrieve_for(self, run: _Run, sentence: Sentence, flare: FlareOptions, round_: int) -> bool:
        """Retrieve for an unsure sentence; True when that put new passages in the prompt."""
        shown = len(run.passages.citations)
        for query in self._queries(run, sentence, flare, round_):
            self._retrieve(run, query, round_=round_, reason="low_confidence",
                           max_tokens=self.options.round_context_tokens)
        return len(run.passages.citations) > shown

    def _queries(self, run: _Run, sentence: Sentence, flare: FlareOptions, round_: int) -> list[str]:
        if flare.query_mode == "question":
            questions = []
            for span in low_confidence_spans(sentence.tokens, flare.beta)[:3]:
                if run.tokens_left() < 1:
                    break  # the budget is spent: the masked sentence is the query
                generation = self._generate(run, query_question_prompt(sentence.text, span), kind="query",
                                            round_=round_, max_tokens=min(48, run.tokens_left()))
                line = generation.text.strip().split("\n")[0].strip()
                if line:
                    questions.append(line)
            if questions:
                return questions
        query = masked_query(sentence.tokens, flare.beta)
        if self.options.style == "reasoning":
            return [reasoning_query(run.question, query)]
        # a sentence that is all guesses leaves nothing to search with; the question still says what is asked.
        # A short answer is a few words that name no subject of their own ("1923", "Ed Wood"): the question
        # says what they answer, and the answer's confident words add what the first retrieval could not know
        # (the bridge entity of a two-hop question)
        if self.options.style == "short" or len(query.split()) < 2:
            return [f"{run.question} {query}".strip()]
        return [query]

    # --- model and retrieval calls ------------------------------------------------------------------------

    def _retrieve(self, run: _Run, query: str, *, round_: int, reason: Literal["question", "low_confidence"],
                  max_tokens: int) -> None:
        hits, timings = self.retrieve(query)
        added = run.passages.add(hits, max_tokens=max_tokens, max_passages=self.options.passages_per_retrieval)
        record = RetrievalRound(round=round_, reason=reason, query=query, hits=hits, timings_ms=timings, added=added)
        run.retrievals.append(record)
        self._emit(AnswerEvent("retrieval", retrieval=record))

    def _chunks(self, prompt: Prompt, *, kind: str, max_tokens: int, logprobs: bool
                ) -> abc.Generator[GenerationChunk, None, None]:
        """The generator's stream with its failures as UpstreamError / UpstreamTimeout. Only the generator's
        own steps are translated: an exception the event callback raises (a listener that has gone away)
        passes through unchanged, and closing this iterator aborts the request."""
        try:
            yield from self.generator.stream(prompt, max_tokens=max_tokens, logprobs=logprobs)
        except (InvalidInput, UpstreamError):
            raise
        except TimeoutError as exc:
            raise UpstreamTimeout(f"the model did not answer in time during the {kind} call; retry, or lower "
                                  "max_tokens") from exc
        except RagsvcError as exc:
            raise UpstreamError(f"the model failed during the {kind} call: {exc.message}") from exc
        except Exception as exc:  # the server or engine died mid-answer: a bad gateway, not our 500
            logger.exception("generator failed during a %s call", kind)
            raise UpstreamError(f"the model failed during the {kind} call ({type(exc).__name__}: {exc})") from exc

    def _generate(self, run: _Run, prompt: Prompt, *,
                  kind: Literal["answer", "lookahead", "regenerate", "query", "final"],
                  round_: int, max_tokens: int, logprobs: bool = False, stream_text: bool = False,
                  until: Until | None = None) -> Generation:
        started = time.perf_counter()
        ttft_ms = 0.0
        text = ""
        tokens: list[TokenLogprob] = []
        finish = "stop"
        usage: Usage | None = None
        pieces = 0
        with closing(self._chunks(prompt, kind=kind, max_tokens=max_tokens, logprobs=logprobs)) as chunks:
            for chunk in chunks:
                if not ttft_ms and (chunk.text or chunk.tokens):
                    ttft_ms = (time.perf_counter() - started) * 1000
                pieces += bool(chunk.text)
                text += chunk.text
                tokens.extend(chunk.tokens)
                if stream_text and chunk.text:
                    self._emit(AnswerEvent("text", text=chunk.text))
                if chunk.finish_reason is not None:
                    finish = chunk.finish_reason
                if chunk.usage is not None:
                    usage = chunk.usage
                if until is not None and chunk.finish_reason is None and until(text, tokens):
                    finish = "abort"  # leaving the stream aborts the request; the engine reports no usage then
                    break
        total_ms = (time.perf_counter() - started) * 1000
        usage = streamed_usage(usage, tokens=len(tokens), pieces=pieces)
        run.generated_tokens += max(usage.completion_tokens, len(tokens))
        generation = Generation(text=text, tokens=without_stop_tokens(tokens, text), finish_reason=finish, usage=usage)
        kept = cut_sentence(generation.tokens, finished=finish == "stop").tokens if kind != "answer" else tokens
        record = GenerationRound(round=round_, kind=kind, prompt_tokens=usage.prompt_tokens,
                                 cached_tokens=usage.cached_tokens, completion_tokens=usage.completion_tokens,
                                 ttft_ms=ttft_ms or total_ms, total_ms=total_ms,
                                 min_prob=min_probability(kept) if logprobs else None, text=text,
                                 low_tokens=low_tokens(kept, run.theta) if logprobs and run.theta is not None else [])
        run.generations.append(record)
        self._emit(AnswerEvent("round", generation=record))
        return generation


@dataclass(slots=True)
class _Run:
    question: str
    passages: PassageLog
    theta: float | None = None
    """FLARE's threshold, for reporting which tokens fell below it (None without FLARE)."""
    answer: str = ""
    retrievals: list[RetrievalRound] = field(default_factory=list)
    generations: list[GenerationRound] = field(default_factory=list)
    token_budget: int | None = None
    """Most tokens all model calls may generate together (FLARE's max_tokens; None: each call's own limit)."""
    generated_tokens: int = 0

    def tokens_left(self) -> int:
        """Tokens the budget still allows (a large number without one, so `min` leaves each call's limit)."""
        return MAX_UNBUDGETED if self.token_budget is None else max(0, self.token_budget - self.generated_tokens)


def _sentence_written(text: str, tokens: list[TokenLogprob]) -> bool:
    """A look-ahead's first sentence is complete once a token after its end has arrived."""
    sentence = cut_sentence(tokens, finished=False)
    return sentence.complete and len(sentence.tokens) < len(tokens)


def without_stop_tokens(tokens: list[TokenLogprob], text: str) -> tuple[TokenLogprob, ...]:
    """The tokens minus trailing ones the text leaves out: an engine reports the end-of-turn token (e.g.
    "<|im_end|>") with its logprob but not in the text, and FLARE builds the answer from token strings."""
    kept = list(tokens)
    joined = "".join(t.token for t in kept)
    while kept and joined != text and joined.startswith(text):
        joined = joined[: len(joined) - len(kept.pop().token)]
    return tuple(kept)


def check_question(question: str) -> str:
    if not isinstance(question, str) or not question.strip():
        raise InvalidInput("question is empty; send the question as text")
    if len(question) > MAX_QUESTION_CHARS:
        raise InvalidInput(f"question has {len(question)} characters; the limit is {MAX_QUESTION_CHARS}")
    return question.strip()


def check_answerable(collection: str, num_chunks: int) -> None:
    """An answer needs passages: asking a collection that holds none would have the model answer from
    nothing, with no sources, as if it had read something."""
    if num_chunks == 0:
        raise InvalidInput(f"collection {collection!r} holds no documents yet, so there is nothing to answer "
                           "from; ingest documents into it first")
