"""The `reasoning` style with scripted token probabilities: sentence cuts around initials, the query each unsure
reasoning sentence forms for the next hop, the short answer read from "So the answer is X", passages a later
hop re-finds not shown twice, and the look-ahead aborted at its sentence end. (Whether a real model reasons
well is measured in the HotpotQA eval, not here.)"""

from __future__ import annotations

import math

from ragsvc.answer.answerer import Answerer, AnswerEvent, AnswerOptions
from ragsvc.answer.flare import cut_sentence
from ragsvc.answer.prompt import PassageLog, answer_prompt
from ragsvc.answer.reasoning import (
    EXAMPLES,
    closed_book_prompt,
    final_answer,
    has_final_sentence,
    reasoning_prompt_head,
    reasoning_query,
    through_final_sentence,
)
from ragsvc.answer.types import FlareOptions
from ragsvc.evals.answer_strategies import short_answer
from ragsvc.llm.generator import Generation, TokenLogprob, Usage
from ragsvc.llm.scripted import ScriptedGenerator
from ragsvc.types import ChunkId, DocumentId, Hit

QUESTION = "Where was the director of the film Moonrise born?"


def toks(*pairs: tuple[str, float]) -> tuple[TokenLogprob, ...]:
    return tuple(TokenLogprob(token=t, logprob=math.log(p)) for t, p in pairs)


def gen(*pairs: tuple[str, float], finish: str = "length") -> Generation:
    tokens = toks(*pairs)
    return Generation(text="".join(t.token for t in tokens), tokens=tokens, finish_reason=finish,
                      usage=Usage(prompt_tokens=300, completion_tokens=len(tokens), cached_tokens=250))


def hit(i: int, text: str) -> Hit:
    return Hit(ChunkId(i), DocumentId(f"doc{i}"), text, 1.0 / i)


FILM = hit(1, "Moonrise is a 1948 film directed by Frank Borzage.")
OTHER = hit(2, "Moonrise is also the name of a 2012 comedy.")
BORZAGE = hit(3, "Frank Borzage was born in Salt Lake City, Utah.")


class Retriever:
    """The question finds the film; a query naming the director finds his biography (and the film again)."""

    def __init__(self) -> None:
        self.queries: list[str] = []

    def __call__(self, query: str) -> tuple[list[Hit], dict[str, float]]:
        self.queries.append(query)
        hits = [BORZAGE, FILM] if "Borzage" in query else [FILM, OTHER]
        return hits, {"total_ms": 1.0}


# --- pure parts ------------------------------------------------------------------------------------------


def test_initials_and_titles_do_not_end_a_sentence():
    s = cut_sentence(toks((" J.", 0.9), (" R.", 0.9), (" R.", 0.9), (" Tolkien", 0.9), (" wrote", 0.9), (" it", 0.9),
                          (".", 0.9), (" He", 0.9)), finished=False)
    assert s.text == " J. R. R. Tolkien wrote it." and s.complete
    s = cut_sentence(toks((" It", 0.9), (" is", 0.9), (" in", 0.9), (" St.", 0.9), (" Louis", 0.9), (".", 0.9),
                          ("\n", 0.9)), finished=False)
    assert s.text == " It is in St. Louis."
    s = cut_sentence(toks((" So", 0.9), (" the", 0.9), (" answer", 0.9), (" is", 0.9), (" 1948", 0.9), (".", 0.9)),
                     finished=True)
    assert s.text == " So the answer is 1948." and s.complete  # a year's period still ends the sentence


def test_the_final_answer_is_what_follows_the_answer_is():
    assert final_answer("Moonrise was directed by Frank Borzage. So the answer is Salt Lake City.") == "Salt Lake City"
    assert final_answer('So the answer is: "J. K. Rowling" [2].\nMore text.') == "J. K. Rowling"
    assert final_answer("The answer is 1, not 2. So the answer is 2.") == "2"  # the last one counts
    assert final_answer("Frank Borzage directed it.") is None and final_answer("So the answer is .") is None
    # the eval's scorer reads the same span; a short answer without the label is scored as before
    assert short_answer("A. So the answer is yes.") == "yes" and short_answer("Ed Wood [1]\nwhy") == "Ed Wood"


def test_the_final_sentence_ends_the_reasoning_at_its_end_not_at_an_initial():
    text = "It was written by J. K. Rowling. So the answer is J. K. Rowling. She also wrote"
    assert has_final_sentence(text)
    assert through_final_sentence(text) == "It was written by J. K. Rowling. So the answer is J. K. Rowling."
    assert not has_final_sentence("So the answer is Salt Lake")  # unfinished: the model is still writing it
    assert not has_final_sentence("So the answer is J.")  # nothing after the initial's period yet
    assert has_final_sentence("So the answer is no\n") and through_final_sentence("x") == "x"


def test_a_reasoning_query_is_the_masked_sentence_or_the_question_when_little_is_left():
    assert reasoning_query(QUESTION, "Frank Borzage was born in [1] .") == "Frank Borzage was born in"
    # the final sentence masked leaves only its label: the question says what is asked
    assert reasoning_query(QUESTION, "So the answer is") == QUESTION
    assert reasoning_query(QUESTION, "So the answer is Utah.") == f"{QUESTION} Utah."


def test_the_prompt_starts_with_the_examples_and_closed_book_keeps_them():
    head = reasoning_prompt_head()
    assert all(q in head and a in head for q, a in EXAMPLES)
    user = answer_prompt(QUESTION, PassageLog(1000), "", style="reasoning")[0]["content"]
    assert user.startswith(head + f"Question: {QUESTION}") and user.endswith(f"Question: {QUESTION}")
    # closed book: the examples are earlier turns of the chat, the question the last user turn
    closed = closed_book_prompt(QUESTION)
    assert [m["role"] for m in closed] == ["user", "assistant"] * len(EXAMPLES) + ["user"]
    assert [m["content"] for m in closed[1::2]] == [a for _, a in EXAMPLES]
    assert closed[-1]["content"] == f"Question: {QUESTION}" and "passages" not in str(closed).lower()
    # the examples are general knowledge written for the prompt, none a question of the evaluated sets
    assert all("So the answer is" in a for _, a in EXAMPLES)


# --- the answerer ----------------------------------------------------------------------------------------


def test_flare_reasoning_retrieves_the_second_hop_from_the_unsure_sentence():
    replies = [
        gen((" Moonrise", 0.9), (" was", 0.9), (" directed", 0.9), (" by", 0.9), (" Frank", 0.8), (" Borzage", 0.9),
            (".", 0.9), (" He", 0.9)),
        gen((" Frank", 0.9), (" Borzage", 0.9), (" was", 0.9), (" born", 0.9), (" in", 0.9), (" Chicago", 0.1),
            (".", 0.9), (" So", 0.9)),
        gen((" Frank", 0.9), (" Borzage", 0.9), (" was", 0.9), (" born", 0.9), (" in", 0.9), (" Salt", 0.9),
            (" Lake", 0.9), (" City", 0.9), (".", 0.9), (" So", 0.9)),
        gen((" So", 0.9), (" the", 0.9), (" answer", 0.9), (" is", 0.9), (" Salt", 0.9), (" Lake", 0.9),
            (" City", 0.9), (".", 0.9), (" Moon", 0.9)),
    ]
    generator = ScriptedGenerator(replies)
    retriever = Retriever()
    answer = Answerer(generator, retriever, options=AnswerOptions(style="reasoning")).answer(
        QUESTION, flare=FlareOptions(theta=0.5, beta=0.4, max_rounds=6, max_tokens=200))
    assert answer.text == ("Moonrise was directed by Frank Borzage. Frank Borzage was born in Salt Lake City. "
                           "So the answer is Salt Lake City.")
    assert answer.final == "Salt Lake City" and answer.finish_reason == "stop"
    assert retriever.queries == [QUESTION, "Frank Borzage was born in."]  # "Chicago" masked
    # the second hop re-found the film: only the biography joined the prompt, as passage 3
    assert answer.retrievals[1].added == [3] and [c.chunk_id for c in answer.passages] == [1, 2, 3]
    assert [g.kind for g in answer.generations] == ["lookahead", "lookahead", "regenerate", "lookahead"]
    assert generator.calls[2][0][0]["content"].count("Frank Borzage was born in Salt Lake City") == 1


def test_a_lookahead_stops_at_its_sentence_end_when_asked():
    long_reply = gen((" So", 0.9), (" the", 0.9), (" answer", 0.9), (" is", 0.9), (" Utah", 0.9), (".", 0.9),
                     (" It", 0.9), (" is", 0.9), (" a", 0.9), (" state", 0.9), (".", 0.9))
    answer = Answerer(ScriptedGenerator([long_reply]), Retriever(), options=AnswerOptions(style="reasoning")).answer(
        QUESTION, flare=FlareOptions(stop_at_sentence=True))
    assert answer.text == "So the answer is Utah." and answer.final == "Utah"
    # read one token past the sentence end, then aborted: no usage came back, so no prompt tokens recorded
    assert answer.generations[0].completion_tokens == 7 and answer.generations[0].prompt_tokens == 0
    answer = Answerer(ScriptedGenerator([long_reply]), Retriever(), options=AnswerOptions(style="reasoning")).answer(
        QUESTION, flare=FlareOptions())
    assert answer.text == "So the answer is Utah." and answer.generations[0].completion_tokens == 11


def test_single_reasoning_ends_at_the_final_sentence():
    reply = "Moonrise was directed by Frank Borzage. So the answer is Frank Borzage. Question: next one"
    answer = Answerer(ScriptedGenerator([reply]), Retriever(), options=AnswerOptions(style="reasoning")).answer(
        QUESTION)
    assert answer.text == "Moonrise was directed by Frank Borzage. So the answer is Frank Borzage."
    assert answer.final == "Frank Borzage"



def test_reasoning_that_stops_without_its_final_sentence_is_asked_to_complete_it():
    generator = ScriptedGenerator(["Moonrise was directed by Frank Borzage.", " Frank Borzage.\nQuestion: next"])
    events: list[AnswerEvent] = []
    answer = Answerer(generator, Retriever(), options=AnswerOptions(style="reasoning"),
                      on_event=events.append).answer(QUESTION)
    assert answer.text == "Moonrise was directed by Frank Borzage. So the answer is Frank Borzage."
    assert answer.final == "Frank Borzage" and [g.kind for g in answer.generations] == ["answer", "final"]
    # the model continues its own answer, the label written for it as the end of the assistant turn
    assert generator.calls[1][0][-1] == {"role": "assistant", "content": "Moonrise was directed by Frank Borzage. "
                                                                         "So the answer is"}
    assert "".join(e.text for e in events if e.kind == "text") == answer.text
    # FLARE too: rounds ran out before the final sentence
    confident = gen((" Moonrise", 0.9), (" is", 0.9), (" a", 0.9), (" film", 0.9), (".", 0.9), (" It", 0.9))
    answer = Answerer(ScriptedGenerator([confident, " Frank Borzage."]), Retriever(),
                      options=AnswerOptions(style="reasoning")).answer(QUESTION, flare=FlareOptions(max_rounds=1))
    assert answer.text == "Moonrise is a film. So the answer is Frank Borzage." and answer.final == "Frank Borzage"
