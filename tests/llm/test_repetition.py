"""Where generated text starts repeating itself: loops are cut before their first repeat, while text that only
looks alike (list items with a shared opening, short replies, code) is left whole."""

from __future__ import annotations

import pytest

from ragsvc.llm.repetition import NGRAM_WORDS, RepeatWatch, repeat_start, without_repeat

LOOP = ("Paged attention saves memory by allocating the cache in blocks [1]. It shares blocks between requests. "
        "It shares blocks between requests. It shares blocks between requests. It shares blocks")
KEPT = "Paged attention saves memory by allocating the cache in blocks [1]. It shares blocks between requests."


@pytest.mark.parametrize(("text", "kept"), [
    (LOOP, KEPT),
    # a loop with no sentence ends: cut where the run of words comes round again
    (" ".join(["the block table maps positions to blocks"] * 4), "the block table maps positions to blocks"),
    # a sentence that restarts midway into an earlier one: the whole sentence goes, not half of it
    ("It is fast. The scheduler decides which sequences run and which wait for blocks to free. Then the "
     "scheduler decides which sequences run and which wait for blocks to",
     "It is fast. The scheduler decides which sequences run and which wait for blocks to free."),
    # the same sentence with other citations, case and spacing is the same sentence
    ("Blocks are shared between requests [1]. Blocks  are SHARED between requests [2].",
     "Blocks are shared between requests [1]."),
    # counting citations upwards (SmolLM2-135M on the bundled sample): cut where the run starts
    ("The answer to the question is: " + " ".join(f"[{n}]" for n in range(1, 40)), "The answer to the question is:"),
    ("Blocks are shared [1], [2], [3], [4], [5], [6], [7], [8], [9], [10]", "Blocks are shared"),
])
def test_a_loop_is_cut_before_its_first_repeat(text, kept):
    assert without_repeat(text) == (kept, True)


@pytest.mark.parametrize("text", [
    "It supports transactions. It supports JSON columns. It supports list columns. It supports fast scans.",
    "Yes. Yes. No. No.",  # too short to count
    "Here is how:\n```python\nfor i in range(n):\n    total += i\nfor i in range(n):\n    total += i\n```\nDone.",
    "The first block holds tokens 0 to 15 and the second block holds tokens 16 to 31 of the sequence.",
    "Blocks are shared [1][2][3][4][5][6][7]. Copies are made on write [8], [9].",  # seven in a row at most
    "",
])
def test_text_that_only_looks_alike_is_left_whole(text):
    assert repeat_start(text) is None and without_repeat(text) == (text, False)


def test_the_watch_fires_once_the_repeat_is_written_not_before():
    watch = RepeatWatch()
    words = LOOP.split(" ")
    fired = [n for n in range(1, len(words) + 1) if watch(" ".join(words[:n]))]
    second = len(KEPT.split(" ")) + len(["It", "shares", "blocks", "between", "requests."])
    assert fired and fired[0] == second  # the moment the repeated sentence ends


def test_the_watch_stops_a_citation_count_early():
    watch = RepeatWatch()
    words = ("The answer is: " + " ".join(f"[{n}]" for n in range(1, 200))).split(" ")
    fired = [n for n in range(1, len(words) + 1) if watch(" ".join(words[:n]))]
    assert fired and fired[0] <= 2 * NGRAM_WORDS  # within a look or two of the eighth marker


def test_the_watch_looks_at_sentence_ends_or_every_ngram_of_words(monkeypatch):
    import ragsvc.llm.repetition as repetition

    looks = []
    real = repetition.repeat_start
    monkeypatch.setattr(repetition, "repeat_start", lambda text: looks.append(text) or real(text))
    watch = RepeatWatch()
    words = [f"w{i}" for i in range(10 * NGRAM_WORDS)]  # no sentence end, no repeat
    assert not any(watch(" ".join(words[:n])) for n in range(1, len(words) + 1))
    assert len(looks) == 10


@pytest.mark.parametrize(("text", "kept"), [
    ("分页注意力把缓存分成块。它在请求之间共享块。它在请求之间共享块。它在请求之间共享",
     "分页注意力把缓存分成块。它在请求之间共享块。"),
    ("ページドアテンションはメモリを節約します。ページドアテンションはメモリを節約します。",
     "ページドアテンションはメモリを節約します。"),
    ("缓存被分成固定大小的块" * 4, "缓存被分成固定大小的块"),  # no sentence ends: the run of characters comes round
])
def test_loops_in_scripts_without_spaces_are_cut_too(text, kept):
    assert without_repeat(text) == (kept, True)


@pytest.mark.parametrize("text", [
    "中华人民共和国国家统计局发布了数据。中华人民共和国国家统计局还说了别的。",  # a long name twice is no loop
    "我很好。我很好。",  # four characters are two words' worth: too short to count
])
def test_repeated_names_and_short_sentences_without_spaces_are_left_whole(text):
    assert repeat_start(text) is None


def test_the_watch_looks_at_a_run_of_characters_without_sentence_ends():
    watch = RepeatWatch()
    loop = "缓存被分成固定大小的块" * 6
    fired = [n for n in range(1, len(loop) + 1) if watch(loop[:n])]
    assert fired and fired[0] <= 3 * len("缓存被分成固定大小的块") + 2 * NGRAM_WORDS


@pytest.mark.parametrize(("text", "kept"), [
    # a digit loop is one long word to the word rules: the sentence holding it goes, no truncated number stays
    ("The ef parameter bounds the candidate list. It is set to 1" + "0" * 120,
     "The ef parameter bounds the candidate list."),
    ("It is set to 1" + "0" * 120, "It is set to"),
    ("Look: " + "ab" * 40, "Look:"),
    ("Good. Great answer" + "!" * 60, "Good. Great answer!"),  # punctuation: one is kept
])
def test_a_short_unit_written_over_and_over_is_cut(text, kept):
    assert without_repeat(text) == (kept, True)


@pytest.mark.parametrize("text", [
    "Title\n" + "=" * 60 + "\nBody text.",  # an underline fills its line alone
    "| a | b |\n|" + "-" * 30 + "|" + "-" * 30 + "|",  # table rules: short runs per cell
    "The hash is 0x" + "0" * 40 + "1, which is fine.",  # under RUN_CHARS
    "a" + " " * 80 + "b",  # whitespace is not a unit
])
def test_rules_underlines_and_short_runs_are_left_whole(text):
    assert repeat_start(text) is None


def test_the_watch_looks_at_a_long_word_without_sentence_ends():
    watch = RepeatWatch()
    text = "It is set to 1" + "0" * 200
    fired = [n for n in range(1, len(text) + 1) if watch(text[:n])]
    assert fired and fired[0] <= len("It is set to 1") + 2 * 48  # within two looks of the run's length
