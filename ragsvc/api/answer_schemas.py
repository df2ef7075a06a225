"""Wire schemas of POST /v1/answer and the retrieval options search shares with it (bounded at the edge)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from ragsvc.answer.answerer import MAX_QUESTION_CHARS
from ragsvc.answer.types import MAX_ANSWER_TOKENS, MAX_ROUNDS, Answer
from ragsvc.api.request_body import RequestBody
from ragsvc.retrieval.context import Citation
from ragsvc.types import Hit


class HydeBody(RequestBody):
    n: int = Field(8, ge=1, le=16, description="hypothetical passages")
    template: Literal["science", "code", "general"] = "general"
    temperature: float = Field(0.7, ge=0, le=2)
    max_tokens: int = Field(128, ge=8, le=512)


class FlareBody(RequestBody):
    theta: float = Field(0.4, ge=0, le=1, description="retrieve again when a token's probability is below this")
    beta: float = Field(0.4, ge=0, le=1, description="mask tokens below this out of the retrieval query")
    max_rounds: int = Field(8, ge=1, le=MAX_ROUNDS)
    max_tokens: int = Field(256, ge=1, le=MAX_ANSWER_TOKENS,
                            description="most tokens generated over all rounds, drafts thrown away included "
                                        "(default: the request's max_tokens)")
    lookahead_tokens: int = Field(64, ge=4, le=256)
    query_mode: Literal["masked", "question"] = "masked"
    stop_at_sentence: bool = Field(False, description="abort each look-ahead at its sentence end (faster; those "
                                                      "rounds then report no prompt or cached tokens)")
    accept: Literal["surer", "always"] = Field(
        "surer", description="surer: a regenerated sentence replaces the look-ahead only when its least likely word "
                             "is at least as likely as the look-ahead's; always: the paper's rule")


class RetrievalBody(RequestBody):
    mode: Literal["dense", "lexical", "hybrid"] = Field("dense", description="dense vectors, BM25, or both fused")
    hyde: HydeBody | bool | None = Field(None, description="true for the defaults, or the HyDE options")
    rerank: Literal["embedder", "llm", "cross-encoder"] | None = None
    rerank_candidates: int = Field(30, ge=1, le=200)
    candidates: int = Field(100, ge=1, le=1000, description="hits per retriever before fusion / reranking")
    fusion: Literal["rrf", "convex"] = "rrf"
    alpha: float = Field(0.5, ge=0, le=1, description="dense weight of the convex combination")
    filter: dict[str, Any] | None = None


class AnswerRequest(RetrievalBody):
    question: str = Field(min_length=1, max_length=MAX_QUESTION_CHARS)
    collection: str = Field(min_length=1, max_length=64)
    k: int = Field(5, ge=1, le=50, description="passages retrieved per round")
    flare: FlareBody | bool | None = Field(None, description="true for the defaults, or FLARE's options")
    max_tokens: int = Field(256, ge=1, le=MAX_ANSWER_TOKENS,
                            description="most tokens generated for the answer; with FLARE, over all its model calls")
    context_tokens: int = Field(1024, ge=16, le=32768, description="token budget of the first passages")
    style: Literal["full", "short", "reasoning"] = Field(
        "full", description="full: sentences with citations; short: the answer alone (a name, a date, yes/no) with "
                            "its citation; reasoning: a sentence per fact, then 'So the answer is X' (X in `final`)")
    stream: bool = False


class CitationPublic(BaseModel):
    number: int
    chunk_id: int
    document_id: str
    text: str
    start_char: int
    end_char: int
    score: float

    @classmethod
    def of(cls, c: Citation) -> CitationPublic:
        return cls(number=c.number, chunk_id=int(c.chunk_id), document_id=str(c.document_id), text=c.text,
                   start_char=c.start_char, end_char=c.end_char, score=c.score)


class HitPublic(BaseModel):
    chunk_id: int
    document_id: str
    score: float
    text: str

    @classmethod
    def of(cls, h: Hit) -> HitPublic:
        return cls(chunk_id=int(h.chunk_id), document_id=str(h.document_id), score=h.score, text=h.text)


class RetrievalRoundPublic(BaseModel):
    round: int
    reason: str
    query: str
    hits: list[HitPublic]
    added: list[int]
    timings_ms: dict[str, float]


class GenerationRoundPublic(BaseModel):
    round: int
    kind: str
    prompt_tokens: int
    cached_tokens: int
    completion_tokens: int
    ttft_ms: float
    total_ms: float
    min_prob: float | None
    low_tokens: list[str] = Field(default_factory=list,
                                  description="with FLARE: the word tokens whose probability fell below theta")


class AnswerResponse(BaseModel):
    answer: str
    citations: list[CitationPublic]
    passages: list[CitationPublic]
    retrievals: list[RetrievalRoundPublic]
    generations: list[GenerationRoundPublic]
    timings_ms: dict[str, float]
    usage: dict[str, int]
    finish_reason: str = Field(description="stop (the model ended), length (max_tokens), rounds (FLARE's max "
                                           "rounds), repetition (the model began repeating itself; the answer "
                                           "ends before the repeat) or no_passages (retrieval found nothing to "
                                           "answer from, e.g. a filter no chunk matches; the model was not asked "
                                           "and the answer is empty)")
    final: str | None = Field(None, description="the answer alone, from the reasoning style's last sentence")

    @classmethod
    def of(cls, a: Answer) -> AnswerResponse:
        return cls(
            answer=a.text, citations=[CitationPublic.of(c) for c in a.citations],
            passages=[CitationPublic.of(c) for c in a.passages],
            retrievals=[RetrievalRoundPublic(round=r.round, reason=r.reason, query=r.query,
                                             hits=[HitPublic.of(h) for h in r.hits], added=r.added,
                                             timings_ms=r.timings_ms) for r in a.retrievals],
            generations=[GenerationRoundPublic(round=g.round, kind=g.kind, prompt_tokens=g.prompt_tokens,
                                               cached_tokens=g.cached_tokens, completion_tokens=g.completion_tokens,
                                               ttft_ms=g.ttft_ms, total_ms=g.total_ms, min_prob=g.min_prob,
                                               low_tokens=g.low_tokens)
                         for g in a.generations],
            timings_ms=a.timings_ms,
            usage={"prompt_tokens": a.prompt_tokens, "cached_tokens": a.cached_tokens,
                   "completion_tokens": a.completion_tokens},
            finish_reason=a.finish_reason, final=a.final,
        )
