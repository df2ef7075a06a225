"""Loaders: the shipped sample, the shared datasets' layout, and bad input naming file and line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ragsvc.errors import InvalidInput
from ragsvc.evals.loaders import load_beir, load_qa

TINY = Path(__file__).resolve().parents[2] / "eval" / "data" / "tiny"


def test_tiny_sample_loads_only_judged_queries():
    ds = load_beir(TINY)
    assert len(ds.corpus) == 30
    assert "q99" not in ds.queries and len(ds.queries) == 14
    assert ds.qrels["q01"] == {"d01": 2, "d02": 1}
    assert ds.corpus["d01"].full_text.startswith("Honeybee waggle dance Forager")
    assert list(load_beir(TINY, max_queries=3).queries) == ["q01", "q02", "q03"]


def test_qa_file_with_supporting_ids():
    examples = load_qa(TINY / "answers.jsonl", qrels_path=TINY / "qrels" / "test.tsv")
    by_id = {e.id: e for e in examples}
    assert by_id["q04"].answers == ("about nine bars", "nine bars", "9 bars")
    assert set(by_id["q04"].supporting_ids) == {"d07", "d08"}


def test_qa_file_slices_skip_the_first_questions():
    every = [e.id for e in load_qa(TINY / "answers.jsonl")]
    assert [e.id for e in load_qa(TINY / "answers.jsonl", skip_examples=2, max_examples=3)] == every[2:5]
    with pytest.raises(InvalidInput, match=f"after the first {len(every)}"):
        load_qa(TINY / "answers.jsonl", skip_examples=len(every))


def _copy(tmp_path: Path) -> Path:
    dst = tmp_path / "ds"
    (dst / "qrels").mkdir(parents=True)
    for name in ("corpus.jsonl", "queries.jsonl", "qrels/test.tsv"):
        (dst / name).write_text((TINY / name).read_text())
    return dst


def _append(path: Path, line: str) -> int:
    text = path.read_text()
    path.write_bytes((text + line + "\n").encode("utf-8", "surrogateescape"))  # a lone \udcXX writes that byte
    return text.count("\n") + 1


@pytest.mark.parametrize(
    ("file", "line", "message"),
    [
        ("qrels/test.tsv", "q01\tnot-a-doc\t1", "corpus id 'not-a-doc' is not in the corpus"),
        ("qrels/test.tsv", "q01\td01\t1", "duplicate judgement"),
        ("qrels/test.tsv", "q01\td05", "expected 3 tab-separated columns"),
        ("qrels/test.tsv", "q01\td05\thigh", "is not an integer"),
        ("queries.jsonl", json.dumps({"_id": "q50", "text": "   "}), "empty text"),
        ("queries.jsonl", json.dumps({"_id": "q01", "text": "again"}), "duplicate id 'q01' (first seen at line 1)"),
        ("corpus.jsonl", json.dumps({"_id": "d01", "title": "x", "text": "y"}), "duplicate id 'd01'"),
        ("corpus.jsonl", json.dumps({"title": "x", "text": "y"}), "missing '_id'"),
        ("corpus.jsonl", '{"_id": "d99", "text": ', "not valid JSON"),
        ("corpus.jsonl", '{"_id": "d99", "text": "caf\udce9"}', "not UTF-8 text (column 28)"),
        ("qrels/test.tsv", "q01\td05\t\udcff", "not UTF-8 text"),
        ("queries.jsonl", "[" * 100_000 + "]" * 100_000, "nested too deeply"),
    ],
)
def test_bad_input_names_file_and_line(tmp_path, file, line, message):
    ds = _copy(tmp_path)
    line_no = _append(ds / file, line)
    with pytest.raises(InvalidInput) as info:
        load_beir(ds)
    assert f"{ds / file}:{line_no}:" in str(info.value)
    assert message in str(info.value)


def test_missing_files_and_folders(tmp_path):
    with pytest.raises(InvalidInput, match="dataset folder not found"):
        load_beir(tmp_path / "nope")
    ds = _copy(tmp_path)
    (ds / "qrels" / "test.tsv").unlink()
    with pytest.raises(InvalidInput, match=r"qrels/test.tsv: file not found"):
        load_beir(ds)
    with pytest.raises(InvalidInput, match="dev.tsv: file not found"):
        load_beir(ds, split="dev")


def test_shared_datasets_load_when_present():
    root = Path(__file__).resolve().parents[3] / "shared" / "data"  # shared/ sits beside the repository
    if not (root / "hotpotqa_dev100").is_dir():
        pytest.skip("shared datasets not on this machine")
    hotpot = load_beir(root / "hotpotqa_dev100")
    assert len(hotpot.corpus) == 991 and len(hotpot.queries) == 100
    qa = load_qa(root / "hotpotqa_dev100" / "answers.jsonl")
    assert qa[0].answers == ("yes",)
    nq = load_qa(root / "nq_open" / "NQ-open.dev.jsonl", max_examples=5)
    assert nq[0].id == "1" and "December 1972" in nq[0].answers


def test_a_byte_order_mark_and_windows_line_ends_are_read(tmp_path):
    ds = _copy(tmp_path)
    for name in ("corpus.jsonl", "queries.jsonl", "qrels/test.tsv"):
        text = (ds / name).read_text()
        (ds / name).write_bytes(b"\xef\xbb\xbf" + text.replace("\n", "\r\n").encode("utf-8"))
    loaded = load_beir(ds)
    assert loaded.qrels == load_beir(TINY).qrels and loaded.corpus == load_beir(TINY).corpus
