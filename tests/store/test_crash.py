"""SIGKILL an ingesting process mid-run: every acknowledged document survives, nothing is half-written."""

import os
import signal
import subprocess
import sys
import textwrap

import pytest

from ragsvc.retrieval.vector_store import VectorStore

WRITER = textwrap.dedent("""
    import sys
    from pathlib import Path
    from ragsvc.retrieval.vector_store import VectorStore
    from ragsvc.types import DocumentInput
    store = VectorStore.open(Path(sys.argv[1]), save_interval_s=0.2)
    store.create_collection("c")
    for batch in range(10_000):
        docs = [DocumentInput(text=f"Batch {batch} item {i}: the number {batch * 10 + i} in words is written here.",
                              id=f"b{batch}-{i}", metadata={"batch": batch}) for i in range(8)]
        store.add_documents("c", docs)
        print("ACK", batch, flush=True)
""")


@pytest.mark.slow
def test_sigkill_mid_ingest_loses_no_acknowledged_document(tmp_path, minilm):
    data = tmp_path / "data"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(data)], stdout=subprocess.PIPE, text=True, env=env)
    acked = []
    try:
        for line in proc.stdout:  # bounded: the writer acknowledges a batch every few hundred ms
            acked.append(int(line.split()[1]))
            if len(acked) >= 6:
                break
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    assert len(acked) >= 6, "the writer acknowledged batches before being killed"

    store = VectorStore.open(data, embedder=minilm)
    try:
        info = store.get_collection("c")
        assert info.num_documents % 8 == 0, "batches are all-or-nothing"
        assert info.num_documents >= 8 * len(acked)
        assert info.num_chunks == info.num_documents, "each short document is one chunk, none half-written"
        for batch in acked:
            query = f"Batch {batch} item 3: the number {batch * 10 + 3} in words is written here."
            hits = store.search("c", query=query, k=3, filter={"batch": batch})
            assert hits.hits and hits.hits[0].document_id == f"b{batch}-3"
        # the index holds exactly the catalog's chunks: an unfiltered k=all search returns every one
        assert len(store.search("c", query="number", k=info.num_chunks).hits) == info.num_chunks
    finally:
        store.close()
