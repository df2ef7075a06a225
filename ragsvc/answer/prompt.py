"""The answer prompt, laid out so an engine's prefix cache serves whatever did not change between rounds.

    (user) <instructions>               fixed
    Question: <question>                fixed for the whole answer
    Passages:
    [1] ...  [k] ...                    the first retrieval (packed, best passages at both ends)
    [k+1] ...                           passages later rounds retrieved, appended in arrival order
    Question: <question>                again, nearest the answer
    (assistant) <answer so far>         grows by one sentence per round

Passages are only ever appended, never re-ranked or replaced, and the answer comes last: a round that did not
retrieve re-reads everything but its last sentence from the cache, and one that did re-reads all passages
before the new ones. Numbers stay stable, so a citation [n] written in round 2 still means the same passage
in round 5. The question and passages are the user's turn; the answer so far is an assistant turn the model
continues (ragsvc/llm/chat.py), so instruction-tuned models answer in their own format.

Answer styles: `full` lets the model answer in its own words; `short` asks for the answer alone (a name,
a date, yes or no), which is what extractive QA scores (EM/F1 against a short gold span) and what a caller
that wants a value rather than prose asks for. These two keep the citation instruction, so [n] markers still map
to passages. The third, `reasoning` (answer/reasoning.py), writes one sentence per fact and ends with "So the
answer is X": the multi-hop setup in which each FLARE look-ahead sentence is the query for the next hop. Its
instructions and few-shot examples lead the prompt, so they are cached across questions, not only rounds.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal, get_args

from ragsvc.answer.reasoning import reasoning_prompt_head
from ragsvc.retrieval.context import Citation, TokenCounter, approx_tokens, cited_numbers, pack_context
from ragsvc.types import Hit

AnswerStyle = Literal["full", "short", "reasoning"]
ANSWER_STYLES: tuple[str, ...] = get_args(AnswerStyle)

INSTRUCTIONS = "Use the passages below to answer the question. Cite passages by number, like [1].\n\n"
"""Kept short: small models copy long instructions' formatting back instead of answering."""
SHORT_INSTRUCTIONS = ("Use the passages below to answer the question. Reply with the answer only: a short "
                      "phrase such as a name, a date or a number, or yes or no; no explanation. Cite the passage "
                      "by number, like [1].\n\n")
"""The `short` style: the answer alone, as extractive QA scores it (a sentence around the span loses EM). A
1.5B model occasionally replies to it with the citation alone ("[2]"), which scores nothing."""


def instructions(style: AnswerStyle) -> str:
    if style not in ANSWER_STYLES:
        raise ValueError(f"unknown answer style {style!r}; use one of {', '.join(ANSWER_STYLES)}")
    if style == "reasoning":
        return reasoning_prompt_head()
    return SHORT_INSTRUCTIONS if style == "short" else INSTRUCTIONS


@dataclass(slots=True)
class PassageLog:
    """The passages shown to the model so far, numbered in prompt order, with a total token budget."""

    max_tokens: int
    count_tokens: TokenCounter = approx_tokens
    citations: list[Citation] = field(default_factory=list)
    used_tokens: int = 0

    def add(self, hits: Sequence[Hit], *, max_tokens: int, max_passages: int | None = None) -> list[int]:
        """Append the query's top `max_passages` hits (all with None) that are not shown yet, packed into
        `max_tokens` (and what is left of the total budget); returns the numbers given to them.

        Only the top of the ranking is shown, never the next ranks in place of passages already read: a later
        FLARE retrieval is for the passages its new query ranks highest. When those are already in the
        prompt, the query found nothing new and the prompt stays as it is; reaching below them would add the
        near-misses of a ranking the model has read the best of (on multi-hop QA, the distractor paragraphs
        written to resemble the question), and an unsure model reaches for the passages nearest its answer."""
        shown = {c.chunk_id for c in self.citations}
        fresh = [h for h in hits[:max_passages] if h.chunk_id not in shown]
        budget = min(max_tokens, self.max_tokens - self.used_tokens)
        if not fresh or budget < 16:
            return []
        packed = pack_context(fresh, max_tokens=budget, count_tokens=self.count_tokens)
        offset = len(self.citations)
        added = []
        for c in packed.citations:
            number = offset + c.number
            self.citations.append(Citation(number=number, chunk_id=c.chunk_id, document_id=c.document_id,
                                           start_char=c.start_char, end_char=c.end_char, text=c.text,
                                           rank=c.rank, score=c.score, truncated=c.truncated))
            added.append(number)
        self.used_tokens += packed.num_tokens
        return added

    def citation(self, number: int) -> Citation | None:
        return self.citations[number - 1] if 1 <= number <= len(self.citations) else None

    def cited(self, answer: str) -> list[Citation]:
        """The passages `answer` cites with [n] markers, in order of first mention; unknown numbers ignored."""
        return [c for n in cited_numbers(answer) if (c := self.citation(n)) is not None]

    def render(self) -> str:
        return "\n\n".join(f"[{c.number}] {c.text}" for c in self.citations)


def answer_prompt(question: str, passages: PassageLog, answer_so_far: str, *, style: AnswerStyle = "full"
                  ) -> list[dict[str, str]]:
    """The chat prompt for the next piece of the answer (see the module docstring for the layout): the user
    turn holds instructions, question and passages; the answer so far is an assistant turn to continue."""
    body = passages.render() or "(no passages found)"
    question = question.strip()
    # asked again after the passages: small models answer the question nearest the end; the copy is a few
    # tokens after the cached passages
    user = f"{instructions(style)}Question: {question}\n\nPassages:\n{body}\n\nQuestion: {question}"
    messages = [{"role": "user", "content": user}]
    if answer_so_far.strip():
        messages.append({"role": "assistant", "content": answer_so_far.strip()})
    return messages


def query_question_prompt(sentence: str, span: str) -> list[dict[str, str]]:
    """Asks the model for a question whose answer is `span` in `sentence` (FLARE's generated-question query)."""
    return [{"role": "user", "content": f"Sentence: {sentence.strip()}\nWrite one short question whose answer is "
                                        f"\"{span.strip()}\" in the sentence above. Reply with the question only."}]
