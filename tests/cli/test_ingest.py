"""`ragsvc ingest` on real files, the real store and MiniLM: skip or stop at bad input, resume after kill -9."""

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ragsvc.cli import app
from ragsvc.retrieval.vector_store import VectorStore

runner = CliRunner()


@pytest.fixture()
def mixed(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    rows = [json.dumps({"id": "a", "text": "Tides follow the moon."}), json.dumps({"id": "b"}), "not json",
            json.dumps({"id": "c", "text": "Glaciers carve valleys."})]
    (folder / "docs.jsonl").write_text("\n".join(rows) + "\n")
    (folder / "latin.txt").write_bytes(b"caf\xe9 au lait")
    (folder / "good.md").write_text("# Volcanoes\n\nLava and ash.")
    return folder


def test_on_error_skip_stores_the_rest_and_names_each_skipped_entry(tmp_path, mixed):
    data = str(tmp_path / "data")
    result = runner.invoke(app, ["ingest", str(mixed), "-c", "t", "--data-dir", data, "--on-error", "skip"])
    assert result.exit_code == 0, result.output
    assert "t: 3 documents, 3 chunks" in result.output
    assert "skipped 3:" in result.output
    assert "docs.jsonl:2: each line needs a \"text\"" in result.output
    assert "docs.jsonl:3: invalid JSON" in result.output and "latin.txt: not UTF-8" in result.output
    again = runner.invoke(app, ["ingest", str(mixed), "-c", "t", "--data-dir", data, "--on-error", "skip"])
    assert again.exit_code == 0 and "(0 written, 3 already stored)" in again.output


def test_on_error_stop_refuses_the_load_before_writing(tmp_path, mixed):
    data = tmp_path / "data"
    for mode in ("stop", "fail"):
        result = runner.invoke(app, ["ingest", str(mixed), "-c", "t", "--data-dir", str(data), "--on-error", mode])
        assert result.exit_code == 2
        assert "docs.jsonl:2" in result.output and "(and 2 more); nothing was written" in result.output
        assert not (data / "catalog.duckdb").exists()
    bad = runner.invoke(app, ["ingest", str(mixed), "-c", "t", "--data-dir", str(data), "--on-error", "maybe"])
    assert bad.exit_code == 2 and "--on-error" in bad.output
    bad = runner.invoke(app, ["ingest", str(mixed), "-c", "t", "--data-dir", str(data), "--workers", "0"])
    assert bad.exit_code == 2 and "--workers" in bad.output


@pytest.mark.parametrize("on_error", ["stop", "skip"])
def test_files_with_no_text_are_named_as_skipped_not_dropped_silently(tmp_path, on_error):
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "empty.txt").write_text("")
    (folder / "blank.md").write_text("  \n\t\n")
    (folder / "blank.jsonl").write_text("\n  \n")
    (folder / "good.md").write_text("# Volcanoes\n\nLava and ash.")
    result = runner.invoke(app, ["ingest", str(folder), "-c", "t", "--data-dir", str(tmp_path / "data"),
                                 "--on-error", on_error])
    assert result.exit_code == 0, result.output  # nothing to fix, so --on-error stop does not refuse the load
    assert "skipped 3 file(s) with no text (empty or only whitespace)" in result.output
    for name in ("empty.txt", "blank.md", "blank.jsonl"):
        assert f"  {(folder / name).as_posix()}\n" in result.output
    assert "t: 1 documents, 1 chunks (4 files read)" in result.output
    assert "skipped 3:" not in result.output  # not listed as unreadable


def test_files_a_folder_held_but_ingest_cannot_read_are_counted_and_none_at_all_is_an_error(tmp_path, mixed):
    (mixed / "paper.pdf").write_bytes(b"%PDF-1.7")
    (mixed / ".git").mkdir()
    result = runner.invoke(app, ["ingest", str(mixed), "-c", "t", "--data-dir", str(tmp_path / "data"),
                                 "--on-error", "skip"])
    assert result.exit_code == 0, result.output
    assert ("not read from the folders: 1 file(s) of other types (.pdf x1); 1 hidden file(s) or folder(s)"
            in result.output)
    pdfs = tmp_path / "pdfs"
    pdfs.mkdir()
    (pdfs / "paper.pdf").write_bytes(b"%PDF-1.7")
    data = tmp_path / "data2"
    none = runner.invoke(app, ["ingest", str(pdfs), "-c", "t", "--data-dir", str(data)])
    assert none.exit_code == 2
    assert "no .txt, .md, .markdown, .jsonl files in" in none.output and "(.pdf x1)" in none.output
    assert not (data / "catalog.duckdb").exists()


def test_ids_repeated_in_the_input_are_said_to_be_stored_once_as_their_last_version(tmp_path):
    rows = [{"id": "a", "text": "Tides follow the moon."}, {"id": "b", "text": "Glaciers carve valleys."},
            {"id": "a", "text": "Tides follow the moon and the sun."}]
    (tmp_path / "docs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    data = tmp_path / "data"
    result = runner.invoke(app, ["ingest", str(tmp_path / "docs.jsonl"), "-c", "t", "--data-dir", str(data)])
    assert result.exit_code == 0, result.output
    assert "t: 2 documents" in result.output
    assert "1 document id(s) appear more than once in the input (2 entries); each is stored as its last version" \
        in result.output
    store = VectorStore(data)
    try:
        assert store.get_document("t", "a")["text"] == "Tides follow the moon and the sun."
    finally:
        store.close()


def test_a_bad_collection_setting_fails_without_a_resume_hint_and_writes_nothing(tmp_path, mixed):
    data = tmp_path / "data"
    for args, said in ((["-c", "bad name"], "collection name 'bad name' is invalid"),
                       (["-c", "t", "--shards", "0"], "num_shards must be between 1 and 256, got 0"),
                       (["-c", "t", "--backend", "nope"], "index backend 'nope' is unknown")):
        result = runner.invoke(app, ["ingest", str(mixed / "good.md"), "--data-dir", str(data), *args])
        assert result.exit_code == 2 and said in result.output, result.output
        assert "resume" not in result.output  # nothing was acknowledged, so there is nothing to resume
    store = VectorStore(data)
    try:
        assert store.list_collections() == []
    finally:
        store.close()


def test_index_options_for_an_existing_collection_are_named_as_ignored(tmp_path, mixed):
    data = str(tmp_path / "data")
    first = runner.invoke(app, ["ingest", str(mixed / "good.md"), "-c", "t", "--data-dir", data, "--backend", "exact"])
    assert first.exit_code == 0, first.output
    same = runner.invoke(app, ["ingest", str(mixed / "good.md"), "-c", "t", "--data-dir", data, "--backend", "exact"])
    assert same.exit_code == 0 and "ignored" not in same.output
    other = runner.invoke(app, ["ingest", str(mixed / "good.md"), "-c", "t", "--data-dir", data, "--backend", "hnsw",
                                "--shards", "2"])
    assert other.exit_code == 0, other.output
    assert ("note: t exists (index exact, shards=1, dims=all); --backend hnsw, --shards 2 only apply to a new "
            "collection and were ignored") in other.output
    store = VectorStore(Path(data))
    try:
        assert store.get_collection("t").index.backend == "exact"
    finally:
        store.close()


def _corpus(path, n):
    with path.open("w") as out:
        for i in range(n):
            out.write(json.dumps({"id": f"d{i}", "text": f"Record {i}: the value {i * 7} is noted in words."}) + "\n")
    return path


@pytest.mark.slow
def test_kill_9_mid_ingest_then_the_same_command_resumes(tmp_path, minilm):
    corpus = _corpus(tmp_path / "corpus.jsonl", 600)
    data = tmp_path / "data"
    command = [sys.executable, "-c", "from ragsvc.cli import main; main()", "ingest", str(corpus), "-c", "r",
               "--data-dir", str(data), "--batch-size", "8"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "COLUMNS": "200"}
    proc = subprocess.Popen(command, stderr=subprocess.PIPE, env=env)
    shown = 0
    try:
        buffer = b""
        while shown < 80:  # bounded: the bar advances after every committed batch, or the writer exits
            chunk = proc.stderr.read1(4096)
            if not chunk:
                break
            buffer = (buffer + chunk)[-4096:]
            counts = re.findall(rb"(\d+)/600 \[", buffer)
            shown = max([shown, *(int(c) for c in counts)])
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    assert 80 <= shown < 600, f"killed mid-run after {shown} acknowledged documents"

    store = VectorStore.open(data, embedder=minilm)
    try:
        survived = store.get_collection("r").num_documents
    finally:
        store.close()
    assert survived >= shown, "every document the bar showed as done was committed"

    resumed = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    assert f"({600 - survived} written, {survived} already stored)" in resumed.stderr
    store = VectorStore.open(data, embedder=minilm)
    try:
        info = store.get_collection("r")
        assert info.num_documents == info.num_chunks == 600
        ids = [d["id"] for d in store.list_documents("r", limit=1000)]
        assert sorted(ids) == sorted(f"d{i}" for i in range(600))
        hit = store.search("r", query="Record 123: the value 861 is noted in words.", k=1).hits[0]
        assert hit.document_id == "d123"
    finally:
        store.close()
