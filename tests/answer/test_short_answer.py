"""The short answer style with scripted replies: the prompt asks for the answer alone (citations still asked
for), and FLARE's query for an unsure short answer is the question plus the answer's confident words."""

from __future__ import annotations

import math

import pytest

from ragsvc.answer.answerer import Answerer, AnswerOptions
from ragsvc.answer.prompt import INSTRUCTIONS, SHORT_INSTRUCTIONS, PassageLog, answer_prompt
from ragsvc.answer.types import FlareOptions
from ragsvc.errors import InvalidInput
from ragsvc.llm.generator import Generation, TokenLogprob, Usage
from ragsvc.llm.scripted import ScriptedGenerator
from ragsvc.types import ChunkId, DocumentId, Hit

QUESTION = "Which studio made the film directed by the author of Trainspotting's adaptation?"
FIRST = [Hit(ChunkId(1), DocumentId("film"), "The adaptation was directed by Danny Boyle.", 1.0)]
SECOND = [Hit(ChunkId(2), DocumentId("studio"), "Danny Boyle's film was made by Figment Films.", 0.9)]


def gen(*pairs: tuple[str, float]) -> Generation:
    tokens = tuple(TokenLogprob(token=t, logprob=math.log(p)) for t, p in pairs)
    return Generation(text="".join(t.token for t in tokens), tokens=tokens, finish_reason="stop",
                      usage=Usage(prompt_tokens=50, completion_tokens=len(tokens)))


class Retriever:
    def __init__(self) -> None:
        self.queries: list[str] = []

    def __call__(self, query: str) -> tuple[list[Hit], dict[str, float]]:
        self.queries.append(query)
        return (SECOND if "Boyle" in query.replace(QUESTION, "") else FIRST), {"total_ms": 1.0}


def test_the_short_style_asks_for_the_answer_alone_and_still_for_citations():
    passages = PassageLog(max_tokens=512)
    passages.add(FIRST, max_tokens=512)
    full = answer_prompt("Who?", passages, "")[0]["content"]
    short = answer_prompt("Who?", passages, "", style="short")[0]["content"]
    assert full.startswith(INSTRUCTIONS) and short.startswith(SHORT_INSTRUCTIONS)
    assert full.removeprefix(INSTRUCTIONS) == short.removeprefix(SHORT_INSTRUCTIONS)  # same layout after it
    assert "answer only" in SHORT_INSTRUCTIONS and "[1]" in SHORT_INSTRUCTIONS


def test_an_unsure_short_answer_searches_with_the_question_and_its_confident_words():
    replies = [gen((" Danny", 0.9), (" Boyle", 0.8), (" Pictures", 0.2)),  # the whole answer: one look-ahead
               gen((" Figment", 0.9), (" Films", 0.9), (" [2]", 0.9))]
    generator = ScriptedGenerator(replies)
    retriever = Retriever()
    answer = Answerer(generator, retriever, options=AnswerOptions(style="short")).answer(
        QUESTION, flare=FlareOptions(theta=0.4, beta=0.4))
    # masked alone the answer would be "Danny Boyle": the question says what it answers
    assert retriever.queries == [QUESTION, f"{QUESTION} Danny Boyle"]
    assert [g.kind for g in answer.generations] == ["lookahead", "regenerate"]
    assert answer.text == "Figment Films [2]" and [c.document_id for c in answer.citations] == ["studio"]
    assert all(p[0]["content"].startswith(SHORT_INSTRUCTIONS) for p, _ in generator.calls)


def test_a_confident_short_answer_is_the_single_retrieval_answer():
    confident = gen((" Figment", 0.9), (" Films", 0.9))
    flare_gen, single_gen = ScriptedGenerator([confident]), ScriptedGenerator([confident])
    options = AnswerOptions(style="short")
    flare = Answerer(flare_gen, Retriever(), options=options).answer(QUESTION, flare=FlareOptions())
    single = Answerer(single_gen, Retriever(), options=options).answer(QUESTION)
    assert flare.text == single.text == "Figment Films" and len(flare.retrievals) == 1
    assert flare_gen.calls[0][0] == single_gen.calls[0][0]  # the same prompt, so FLARE changes only unsure answers


def test_an_unknown_style_is_refused():
    with pytest.raises(InvalidInput, match="full, short"):
        AnswerOptions(style="terse")  # type: ignore[arg-type]


def test_a_later_retrieval_shows_its_own_top_passages_not_the_next_ranks_of_a_read_ranking():
    ranked = [Hit(ChunkId(i), DocumentId(f"d{i}"), f"Passage {i} about Danny Boyle's films.", 1.0 / i)
              for i in range(1, 7)]
    reordered = [ranked[1], ranked[4], ranked[0], ranked[2]]  # a different query's top: 2 (shown), 5 (new)
    replies = [gen((" Danny", 0.9), (" Pictures", 0.2)), gen((" Figment", 0.9), (" Films", 0.9))]

    def retrieve(query: str) -> tuple[list[Hit], dict[str, float]]:
        return (ranked if query == QUESTION else reordered), {"total_ms": 1.0}

    answer = Answerer(ScriptedGenerator(replies), retrieve,
                      options=AnswerOptions(style="short", passages_per_retrieval=2)).answer(
        QUESTION, flare=FlareOptions())
    assert [r.added for r in answer.retrievals] == [[1, 2], [3]]  # of its top two, the one not read yet
    assert [c.chunk_id for c in answer.passages] == [1, 2, 5]
    assert answer.text == "Figment Films"
    with pytest.raises(InvalidInput, match="passages_per_retrieval"):
        AnswerOptions(passages_per_retrieval=0)


def test_a_later_retrieval_that_refinds_the_shown_passages_adds_nothing_and_keeps_the_sentence():
    ranked = [Hit(ChunkId(i), DocumentId(f"d{i}"), f"Passage {i} about Danny Boyle's films.", 1.0 / i)
              for i in range(1, 7)]
    generator = ScriptedGenerator([gen((" Danny", 0.9), (" Pictures", 0.2))])
    answer = Answerer(generator, lambda query: (ranked, {"total_ms": 1.0}),
                      options=AnswerOptions(style="short", passages_per_retrieval=2)).answer(
        QUESTION, flare=FlareOptions())
    # the deeper ranks 3-6 of a ranking whose top the model has read are not shown in their place
    assert [r.added for r in answer.retrievals] == [[1, 2], []]
    assert [g.kind for g in answer.generations] == ["lookahead"]  # nothing new to read: no regeneration
    assert answer.text == "Danny Pictures" and len(generator.calls) == 1


def test_a_regeneration_less_sure_than_the_look_ahead_does_not_replace_it():
    # the new passages did not supply what the model lacked: the answer a single retrieval gives stands
    lookahead = gen((" Danny", 0.9), (" Boyle", 0.8), (" Pictures", 0.3))
    less_sure = gen((" Figment", 0.2), (" Films", 0.9))
    answer = Answerer(ScriptedGenerator([lookahead, less_sure]), Retriever(),
                      options=AnswerOptions(style="short")).answer(QUESTION, flare=FlareOptions())
    assert [g.kind for g in answer.generations] == ["lookahead", "regenerate"]  # both recorded
    assert answer.text == "Danny Boyle Pictures"
    assert [c.document_id for c in answer.passages] == ["film", "studio"]  # what was read stays in the prompt
    paper = Answerer(ScriptedGenerator([lookahead, less_sure]), Retriever(),
                     options=AnswerOptions(style="short")).answer(QUESTION, flare=FlareOptions(accept="always"))
    assert paper.text == "Figment Films"
    as_sure = Answerer(ScriptedGenerator([lookahead, gen((" Figment", 0.3), (" Films", 0.9))]), Retriever(),
                       options=AnswerOptions(style="short")).answer(QUESTION, flare=FlareOptions())
    assert as_sure.text == "Figment Films"  # a tie goes to the sentence written with more passages
    with pytest.raises(InvalidInput, match="accept must be 'surer' or 'always'"):
        FlareOptions(accept="maybe")  # type: ignore[arg-type]
