"""Compaction against a real store: a real duckdb catalog written through VectorStore with the packaged
MiniLM, a collection deleted, the file rewritten, and the store reopened and written again."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest
from typer.testing import CliRunner

from ragsvc.cli import app
from ragsvc.errors import Conflict, InvalidInput, RagsvcError
from ragsvc.retrieval.vector_store import CATALOG_FILE, VectorStore
from ragsvc.store import compact as compact_module
from ragsvc.store.compact import COPY_SUFFIX, compact
from ragsvc.types import DocumentInput

runner = CliRunner()


def _fill(data: Path, embedder) -> list[int]:
    store = VectorStore.open(data, embedder=embedder)
    try:
        store.create_collection("kept")
        store.create_collection("big")
        store.add_documents("kept", [DocumentInput(id=f"k{i}", text=f"paged attention note {i}") for i in range(5)])
        # short texts (cheap to embed) with bulky metadata: space to give back without minutes of embedding
        store.add_documents("big", [DocumentInput(id=f"b{i}", text=f"bulk text number {i}",
                                                  metadata={"blob": f"{i}" + "x" * 3000}) for i in range(400)])
        store.delete_collection("big")
        return [int(h.chunk_id) for h in store.search("kept", query="paged attention", k=5).hits]
    finally:
        store.close()


def test_compaction_shrinks_the_file_and_keeps_rows_ids_and_sequences(tmp_path: Path, minilm) -> None:
    data = tmp_path / "data"
    kept_ids = _fill(data, minilm)
    before = (data / CATALOG_FILE).stat().st_size
    result = compact(data / CATALOG_FILE)
    fresh = VectorStore.open(tmp_path / "fresh", embedder=minilm)  # what the kept rows take in a new catalog
    try:
        fresh.create_collection("kept")
        fresh.add_documents("kept", [DocumentInput(id=f"k{i}", text=f"paged attention note {i}") for i in range(5)])
    finally:
        fresh.close()
    fresh_bytes = (tmp_path / "fresh" / CATALOG_FILE).stat().st_size
    assert result.before_bytes == before > fresh_bytes + 2**19, result
    assert result.after_bytes <= fresh_bytes + 2**18, (result, fresh_bytes)
    assert result.rows["documents"] == 5 and result.rows["collections"] == 1
    assert result.rows["embedding_cache"] == 5 and result.cache_rows_dropped >= 400  # the deleted texts' vectors
    assert not (data / (CATALOG_FILE + COPY_SUFFIX)).exists()
    store = VectorStore.open(data, embedder=minilm)
    try:  # the indexes were not rebuilt and still agree with the catalog; new ids continue the old sequence
        hits = store.search("kept", query="paged attention", k=5).hits
        assert sorted(int(h.chunk_id) for h in hits) == sorted(kept_ids)
        assert hits[0].text.startswith("paged attention note")
        store.add_documents("kept", [DocumentInput(id="new", text="continuous batching")])
        new_id = max(int(h.chunk_id) for h in store.search("kept", query="continuous batching", k=1).hits)
        assert new_id > 400, "the chunk id sequence restarted: ids would collide with the indexes' watermark"
    finally:
        store.close()


def test_keep_cache_keeps_the_vectors_of_deleted_texts(tmp_path: Path, minilm) -> None:
    data = tmp_path / "data"
    _fill(data, minilm)
    result = compact(data / CATALOG_FILE, keep_cache=True)
    assert result.cache_rows_dropped == 0 and result.rows["embedding_cache"] >= 405


def test_a_held_catalog_is_refused_and_left_whole(tmp_path: Path, minilm) -> None:
    import multiprocessing

    data = tmp_path / "data"
    _fill(data, minilm)
    store = VectorStore.open(data, embedder=minilm)
    try:  # duckdb's lock is per process, so a second process stands for the command beside a running server
        with multiprocessing.get_context("spawn").Pool(1) as pool:
            said = pool.apply(_compact_in_child, (str(data / CATALOG_FILE),))
    finally:
        store.close()
    assert "another process holds it" in said and "Stop `ragsvc serve`" in said, said
    assert not (data / (CATALOG_FILE + COPY_SUFFIX)).exists()
    with duckdb.connect(str(data / CATALOG_FILE)) as conn:
        assert conn.execute("SELECT count(*) FROM documents").fetchone() == (5,)


def _compact_in_child(path: str) -> str:
    try:
        compact(Path(path))
    except Conflict as exc:
        return str(exc)
    return "compacted a held catalog"


def test_a_failure_before_the_rename_leaves_the_old_catalog_and_the_next_run_cleans_up(
        tmp_path: Path, minilm, monkeypatch: pytest.MonkeyPatch) -> None:
    data = tmp_path / "data"
    _fill(data, minilm)
    path = data / CATALOG_FILE

    def killed(*args: object) -> None:
        raise KeyboardInterrupt  # as a Ctrl-C between the checked copy and the rename

    monkeypatch.setattr(compact_module.os, "replace", killed)
    with pytest.raises(KeyboardInterrupt):
        compact(path)
    assert (data / (CATALOG_FILE + COPY_SUFFIX)).exists()
    with duckdb.connect(str(path)) as conn:  # the old file, whole
        assert conn.execute("SELECT count(*) FROM documents").fetchone() == (5,)
        assert conn.execute("SELECT count(*) FROM chunks WHERE collection = 'kept'").fetchone() == (5,)
    monkeypatch.undo()
    assert compact(path).rows["documents"] == 5
    assert not (data / (CATALOG_FILE + COPY_SUFFIX)).exists()


def test_the_cli_reports_what_it_returned_and_refuses_a_folder_without_a_catalog(tmp_path: Path,
                                                                                  minilm) -> None:
    data = tmp_path / "data"
    _fill(data, minilm)
    result = runner.invoke(app, ["collections", "compact", "--data-dir", str(data)])
    assert result.exit_code == 0, result.output
    assert " MB returned to the disk), " in result.output and "rows in" in result.output
    empty = runner.invoke(app, ["collections", "compact", "--data-dir", str(tmp_path / "none")])
    assert empty.exit_code == 2 and "there is no catalog at" in empty.output
    with pytest.raises(InvalidInput):
        compact(tmp_path / "none" / CATALOG_FILE)


def test_a_database_error_during_the_copy_leaves_the_catalog_and_no_partial_copy(
        tmp_path: Path, minilm, monkeypatch: pytest.MonkeyPatch) -> None:
    data = tmp_path / "data"
    _fill(data, minilm)
    path = data / CATALOG_FILE
    real_rows = compact_module._rows

    def full_disk(conn, database):  # raised where the copy is read back, as a disk that filled during it
        if database == "compacted":
            raise duckdb.IOException("No space left on device")
        return real_rows(conn, database)

    monkeypatch.setattr(compact_module, "_rows", full_disk)
    with pytest.raises(RagsvcError, match="No space left on device.*the catalog keeps every row but the 400 cached"):
        compact(path)
    assert not (data / (CATALOG_FILE + COPY_SUFFIX)).exists()
    with duckdb.connect(str(path)) as conn:
        assert conn.execute("SELECT count(*) FROM chunks WHERE collection = 'kept'").fetchone() == (5,)
