"""Indexing repositories into a real VectorStore (duckdb + hnsw + MiniLM): metadata, incremental re-index,
bad files reported but never fatal, maps from the manifest."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pytest

from ragsvc.code.indexer import RepoIndexer
from ragsvc.code.manifest import manifest_path
from ragsvc.code.repo_map import build_map
from ragsvc.retrieval.vector_store import VectorStore
from tests.code.conftest import write_files

pytestmark = pytest.mark.slow


class CountingEmbedder:
    """The real MiniLM, counting the texts it is asked to embed (to prove unchanged code is not re-embedded)."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.id = inner.id
        self.dim = inner.dim
        self.max_seq_length = inner.max_seq_length
        self.embedded: list[str] = []

    def embed_documents(self, texts: Sequence[str], *, progress: bool = False) -> np.ndarray:
        self.embedded.extend(texts)
        return self.inner.embed_documents(texts, progress=progress)

    def embed_query(self, text: str) -> np.ndarray:
        return self.inner.embed_query(text)

    def count_tokens(self, text: str) -> int:
        return self.inner.count_tokens(text)

    def token_offsets(self, text: str):
        return self.inner.token_offsets(text)


@pytest.fixture()
def store(tmp_path: Path, minilm) -> Iterator[tuple[VectorStore, CountingEmbedder]]:
    embedder = CountingEmbedder(minilm)
    vs = VectorStore.open(tmp_path / "data", embedder=embedder)
    yield vs, embedder
    vs.close()


@pytest.fixture()
def repo(tmp_path: Path, polyglot: Path) -> Path:
    return Path(shutil.copytree(polyglot, tmp_path / "repo"))


def test_index_writes_definition_chunks_with_metadata(store, repo: Path) -> None:
    vs, _ = store
    report = RepoIndexer(vs).index(repo, collection="poly")
    assert (report.num_files, report.num_parsed, report.num_unchanged) == (10, 10, 0)
    assert report.problems == {"pkg/broken.py": ["syntax error: missing ')' at line 5"]}
    info = vs.get_collection("poly")
    assert info.num_documents == 10 and info.num_chunks == report.num_chunks
    hits = vs.search("poly", query="join two path parts with a slash", k=3, filter={"language": "go"}).hits
    assert hits[0].metadata | {"sha256": None} == {
        "path": "go/server.go", "language": "go", "symbol": "Join", "kind": "function", "start_line": 13,
        "end_line": 15, "sha256": None}
    assert hits[0].text.startswith("func Join(a string, b string) string {")
    methods = vs.search("poly", query="retry", k=20, filter={"kind": "method", "language": "python"}).hits
    assert {h.metadata["symbol"] for h in methods} == {"Retrier.run", "Retrier.__init__"}


def test_reindex_touches_only_changed_files(store, repo: Path) -> None:
    vs, embedder = store
    indexer = RepoIndexer(vs)
    indexer.index(repo, collection="poly")
    before = vs.document_hashes("poly")
    embedder.embedded.clear()
    (repo / "pkg" / "app.py").write_text((repo / "pkg" / "app.py").read_text() + "\n\ndef added(q):\n    return q\n")
    (repo / "web" / "util.js").unlink()
    (repo / "go" / "server.go").touch()  # a new mtime but the same bytes: unchanged
    report = indexer.index(repo, collection="poly")
    assert report.changed_files == ["pkg/app.py"]
    assert (report.num_parsed, report.num_unchanged, report.num_removed) == (1, 8, 1)
    assert embedder.embedded == ["def added(q):\n    return q"]  # other chunks of app.py come from the cache
    after = vs.document_hashes("poly")
    assert set(before) - set(after) == {"web/util.js"}
    assert {p for p in after if after[p] != before[p]} == {"pkg/app.py"}
    assert indexer.index(repo, collection="poly").num_parsed == 0  # and now nothing changed at all
    graph = indexer.load_graph("poly")
    assert "added" in {d.name for d in graph.definitions.values()}
    assert "memo" not in {d.name for d in graph.definitions.values()}


def test_bad_files_are_indexed_as_far_as_possible_and_reported(store, tmp_path: Path) -> None:
    vs, _ = store
    repo = write_files(tmp_path / "bad", {
        "good.py": "def fine():\n    return 1\n",
        "latin1.py": b"def caf\xe9():\n    return 'x'\n\ndef ok():\n    return 2\n",
        "broken.rs": "fn good() -> i32 { 1 }\nfn bad( -> { \nfn after() -> i32 { 2 }\n",
        "empty.py": "",
        ".gitignore": "ignored.py\n",
        "ignored.py": "def hidden():\n    pass\n",
    })
    os.symlink(repo / "missing.py", repo / "dangling.py")
    report = RepoIndexer(vs).index(repo, collection="bad")
    assert report.problems["latin1.py"][0] == "invalid UTF-8 at byte 7; replaced with U+FFFD"
    assert report.problems["broken.rs"][0].startswith("syntax error")
    assert "dangling.py" in report.problems
    docs = vs.document_hashes("bad")
    assert set(docs) == {"good.py", "latin1.py", "broken.rs"}  # empty has no code; ignored is ignored
    symbols = {h.metadata["symbol"] for h in vs.search("bad", query="function", k=20).hits}
    assert {"fine", "ok", "good"} <= symbols


def test_unreadable_file_keeps_its_previous_version(store, repo: Path) -> None:
    vs, _ = store
    indexer = RepoIndexer(vs)
    indexer.index(repo, collection="poly")
    target = repo / "pkg" / "core.py"
    target.unlink()
    os.symlink(repo / "nowhere.py", target)  # still listed, but reading it fails
    report = indexer.index(repo, collection="poly")
    assert "pkg/core.py" in report.problems
    assert "pkg/core.py" in vs.document_hashes("poly")  # nothing lost


def test_map_from_manifest_and_corrupt_manifest_rebuilds(store, repo: Path) -> None:
    vs, _ = store
    indexer = RepoIndexer(vs)
    indexer.index(repo, collection="poly")
    repo_map = build_map(indexer.load_graph("poly"), max_tokens=30)
    assert repo_map.text.startswith("pkg/core.py:\n    6│ def normalize(text):")
    manifest_path(vs.data_dir, "poly").write_text("{not json")
    report = indexer.index(repo, collection="poly")
    assert report.num_parsed == 10  # re-parsed to rebuild the manifest; the store skipped unchanged documents
    assert build_map(indexer.load_graph("poly"), max_tokens=30).text == repo_map.text
