"""The answer stage through the Generator protocol; replies are scripted because a 135M model cannot be relied
on to answer or judge (the prompts and the scoring are what is under test)."""

from __future__ import annotations

from ragsvc.answer.answerer import AnswerOptions
from ragsvc.answer.types import FlareOptions
from ragsvc.evals.answer_stage import parse_verdict, run_answer_stage, strip_citations, text_generator
from ragsvc.evals.answer_strategies import answer_one, run_strategies, short_answer
from ragsvc.evals.loaders import QAExample
from ragsvc.llm.scripted import ScriptedGenerator

PASSAGES = ["Perseverance landed in Jezero crater in 2021.", "Chess openings are many."]


def _script(messages):
    prompt = messages[-1]["content"]  # text_generator sends one user message (chat template)
    if prompt.startswith("Answer the question"):
        return "2021 [1]" if "Question: When did Perseverance" in prompt else "bars [2]"
    if "Does the passage support" in prompt:
        return "YES" if "2021" in prompt.split("Answer:")[0] else "no"
    return "Yes, all supported." if "2021" in prompt.split("Answer:")[-1] else "NO"


def test_scores_em_f1_faithfulness_and_citations():
    examples = [QAExample("a", "When did Perseverance land?", ("2021",)),
                QAExample("b", "How much pressure for espresso?", ("nine bars",))]
    gen = ScriptedGenerator(_script)
    stage = run_answer_stage(examples, lambda ex: PASSAGES, generate=text_generator(gen), judge=text_generator(gen))
    records = {r["id"]: r for r in stage["per_example"]}
    assert records["a"]["em"] == 1.0 and records["a"]["faithfulness"] == 1.0
    assert records["a"]["citation_precision"] == 1.0
    assert records["b"]["em"] == 0.0 and records["b"]["f1"] == 2 / 3  # "bars" vs "nine bars"
    assert records["b"]["faithfulness"] == 0.0 and records["b"]["citation_precision"] == 0.0
    assert stage["metrics"]["em"] == 0.5 and stage["uncited"] == 0
    assert len(gen.calls) == 6  # answer + faithfulness + one citation check, per example


def test_without_judge_only_em_f1():
    gen = ScriptedGenerator(["\n  the answer is 2021\nand more rambling"])  # only the first non-empty line counts
    stage = run_answer_stage([QAExample("a", "q", ("2021",))], lambda ex: PASSAGES, generate=text_generator(gen))
    assert stage["metrics"]["faithfulness"] is None and stage["metrics"]["f1"] == 0.5  # "answer is 2021": P 1/3, R 1


def test_verdicts_and_citations_parsing():
    assert parse_verdict("  Yes.") == 1.0 and parse_verdict("No, because") == 0.0 and parse_verdict("maybe") is None
    assert strip_citations("Stradivari [1][2].") == "Stradivari ."


def test_strategies_score_the_answer_after_its_label_on_its_first_line():
    assert short_answer("The answer is:\n\nScience Fantasy [2]\nIt is a series.") == "Science Fantasy"
    assert short_answer("Answer: 1923 [1]") == "1923" and short_answer("So the answer is yes.") == "yes"
    assert short_answer("Answered prayers\nmore") == "Answered prayers"  # a word starting with 'answer' stays
    assert short_answer("[1]\n\nParis") == "Paris" and short_answer("\n") == ""


def test_closed_book_asks_for_the_answer_alone_in_the_short_style():
    example = QAExample("a", "When did Perseverance land?", ("2021",))
    gen = ScriptedGenerator(
        lambda prompt: "The answer is: 2021" if "answer only" in str(prompt) else "It landed in 2021.")
    short = answer_one("none", example, gen, lambda q: ([], {}), options=AnswerOptions(style="short"),
                       flare=FlareOptions())
    full = answer_one("none", example, gen, lambda q: ([], {}), options=AnswerOptions(), flare=FlareOptions())
    assert (short.scored, short.em) == ("2021", 1.0)
    assert (full.scored, full.em, full.match) == ("It landed in 2021.", 0.0, 1.0)


def test_strategies_report_progress_per_question_and_keep_question_order():
    examples = [QAExample(str(i), f"When did probe {i} land?", (str(2000 + i),)) for i in range(6)]
    gen = ScriptedGenerator(lambda prompt: f"The answer is: {2000 + int(str(prompt).split('probe ')[1][0])}")
    calls: dict[str, list[tuple[int, int]]] = {}

    def progress(stage: str):
        calls[stage] = []
        return lambda done, total: calls[stage].append((done, total))

    stage = run_strategies(examples, ["none"], gen, lambda q: ([], {}), options=AnswerOptions(style="short"),
                           flare=FlareOptions(), concurrency=3, progress=progress)
    assert calls == {"answers: none": [(n, 6) for n in range(1, 7)]}
    assert [r["scored"] for r in stage["strategies"]["none"]["per_example"]] == [str(2000 + i) for i in range(6)]
