"""The `reasoning` answer style: a few short sentences of reasoning, one fact each, then "So the answer is X."

This is the multi-hop setup of the FLARE paper (Jiang et al., 2023, after Trivedi et al.'s IRCoT): a question
that needs two facts ("where was the director of film F born?") is answered by first stating the bridge fact
("F was directed by D.") and then the fact about the bridge entity ("D was born in P."). Each sentence is a
look-ahead: when the model is unsure of "D was born in P", the sentence with its unsure words masked
("D was born in") is a query for the second hop, which the question alone could not have formed. The short
answer is read back from the last sentence (`final_answer`), so extractive QA can score it.

The few-shot examples below are general-knowledge questions written for this prompt, not drawn from any
evaluation set; they show the shape (one fact per sentence, the answer alone after "So the answer is") for a
bridge question, a comparison and a yes/no question. They sit at the very start of the prompt, so an engine's
prefix cache serves them to every question after the first.
"""

from __future__ import annotations

import re

from ragsvc.answer.flare import ends_abbreviation

REASONING_INSTRUCTIONS = (
    "Answer the question using the passages. Reason step by step: write one short sentence for each fact you "
    "need, then finish with \"So the answer is\" followed by the answer alone (a name, a date, a number, or yes "
    "or no).\n\n"
)

EXAMPLES: tuple[tuple[str, str], ...] = (
    ("In which year was the author of the novel Pride and Prejudice born?",
     "Pride and Prejudice was written by Jane Austen. Jane Austen was born in 1775. So the answer is 1775."),
    ("Which was founded first, Harvard University or Yale University?",
     "Harvard University was founded in 1636. Yale University was founded in 1701. 1636 is earlier than 1701. "
     "So the answer is Harvard University."),
    ("Do the Nile and the Amazon flow through the same continent?",
     "The Nile flows through Africa. The Amazon flows through South America. Africa and South America are "
     "different continents. So the answer is no."),
    ("In which country was the physicist who proposed the theory of general relativity born?",
     "The theory of general relativity was proposed by Albert Einstein. Albert Einstein was born in Ulm, "
     "Germany. So the answer is Germany."),
)

_FINAL = re.compile(r"\b(?:the\s+)?(?:final\s+)?answer\s+is\b\s*:?\s*", re.IGNORECASE)
_END = re.compile(r"[.!?](?=\s)|\n")
_CITATION = re.compile(r"\[\d+(?:\s*,\s*\d+)*\]")


def examples_block() -> str:
    """The few-shot examples as text, each a question and its reasoning answer, ending in a blank line."""
    return "".join(f"Question: {q}\nAnswer: {a}\n\n" for q, a in EXAMPLES)


def reasoning_prompt_head() -> str:
    """What every reasoning prompt starts with: instructions, then the examples (the shared, cached prefix)."""
    return REASONING_INSTRUCTIONS + "Examples:\n\n" + examples_block()


def closed_book_prompt(question: str) -> list[dict[str, str]]:
    """The reasoning prompt without passages, for answering from what the model knows by itself: the same
    instructions and examples, the examples as earlier turns of the chat. (Given as one block of text and no
    passages after it, a 1.5B model continued the list of examples instead of answering.)"""
    instructions = REASONING_INSTRUCTIONS.replace("Answer the question using the passages. ", "Answer the question. ")
    messages: list[dict[str, str]] = []
    for i, (q, a) in enumerate(EXAMPLES):
        messages.append({"role": "user", "content": f"{instructions if i == 0 else ''}Question: {q}"})
        messages.append({"role": "assistant", "content": a})
    messages.append({"role": "user", "content": f"Question: {question.strip()}"})
    return messages


def final_answer(text: str) -> str | None:
    """What follows the last "the answer is" in `text`, up to the end of its line, without a trailing period,
    quotes or citation markers; None when the text has no such sentence (or nothing after it)."""
    matches = list(_FINAL.finditer(text))
    if not matches:
        return None
    tail = text[matches[-1].end():].split("\n", 1)[0]
    tail = _CITATION.sub("", tail).strip().rstrip(".!").strip().strip("\"'*").strip()
    return tail or None


def final_sentence_end(text: str) -> int | None:
    """Where the first finished "... answer is X." sentence of `text` ends (after its . ! ? when whitespace
    follows, or before a newline; not at the period of an initial, as in "J. K. Rowling"), or None."""
    label = _FINAL.search(text)
    if label is None:
        return None
    for end in _END.finditer(text, label.end()):
        if end.group() == "." and ends_abbreviation(text[: end.end()]):
            continue
        if text[label.end() : end.start()].strip():
            return end.end() if end.group() != "\n" else end.start()
    return None


def has_final_sentence(text: str) -> bool:
    """True once `text` holds a finished final sentence: the reasoning is over, and whatever the model would
    write next is not part of the answer."""
    return final_sentence_end(text) is not None


def through_final_sentence(text: str) -> str:
    """`text` up to the end of its final sentence (all of it when there is none)."""
    end = final_sentence_end(text)
    return text if end is None else text[:end]


FINAL_LABEL = "So the answer is"
"""What the answerer writes for the model when its reasoning stopped without a final sentence: the model then
completes the sentence, so an answer always ends with one the scorer and `Answer.final` can read."""


def final_line(text: str) -> str:
    """The continuation after FINAL_LABEL, up to its sentence end or line end (kept with its period)."""
    end = final_sentence_end(FINAL_LABEL + text + "\n")
    return text if end is None else text[: max(0, end - len(FINAL_LABEL))]


def reasoning_query(question: str, masked_sentence: str) -> str:
    """The retrieval query for an unsure reasoning sentence: the sentence with its unsure words masked, less
    citation markers and the "So the answer is" label. A sentence left with under three words (typically the
    final one, whose answer was the unsure part) says too little on its own, so the question leads it."""
    query = _CITATION.sub(" ", masked_sentence)
    query = re.sub(r"^\W*so\b", "", _FINAL.sub(" ", query), flags=re.IGNORECASE)
    query = " ".join(word for word in query.split() if re.search(r"\w", word))  # no stray punctuation
    if len(re.findall(r"\w+", query)) < 3:
        return f"{question.strip()} {query}".strip()
    return query
