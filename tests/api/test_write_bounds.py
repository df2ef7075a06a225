"""One ingest request cannot take the machine through its metadata: a real `ragsvc serve` child.

Metadata is stored again with each chunk, so 0.9 MB of it on a 1.9M-character text (3,750 chunks) once wrote a
3.4 GB WAL and took the server to 15.5 GB resident from a 2.8 MB request. Now the metadata limit and the
per-batch write limit refuse such requests with 413 before anything is embedded or written, and the largest
plain document allowed still goes in with peak RSS growing by well under 1 GB.
"""

from pathlib import Path

import httpx
import pytest


def _tree_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


@pytest.mark.slow
def test_metadata_copied_into_every_chunk_cannot_fill_the_disk_or_memory(tmp_path):
    from ragsvc.bench.server_process import serve_process

    data = tmp_path / "data"
    text = "lorem ipsum dolor sit amet " * 70_000  # 1.89M characters: under the 2M document limit
    with serve_process(data) as server, httpx.Client(base_url=server.url, timeout=300) as client:
        assert client.post("/v1/collections", json={"name": "c"}).status_code == 201
        baseline = server.rss_bytes()
        server.reset_peak_rss()

        def ingest(doc_id: str, metadata: dict) -> httpx.Response:
            return client.post("/v1/collections/c/documents",
                               json={"documents": [{"id": doc_id, "text": text, "metadata": metadata}]})

        r = ingest("probe", {"a": "x" * 900_000})
        assert r.status_code == 413 and r.json()["error"] == "payload_too_large", r.text
        assert "900008 bytes of metadata" in r.text and "RAGSVC_STORE__MAX_METADATA_BYTES" in r.text
        r = ingest("allowed-metadata", {"a": "x" * 40_000})  # fine on its own, not once per 3,750 chunks
        assert r.status_code == 413 and "RAGSVC_STORE__MAX_WRITE_BYTES" in r.text, r.text
        assert client.get("/v1/collections/c").json()["num_documents"] == 0
        r = ingest("plain", {"kind": "notes"})
        assert r.status_code == 201, r.text
        assert client.get("/v1/collections/c/documents/plain").json()["num_chunks"] > 3000
        grown = server.peak_rss_bytes() - baseline
    assert grown < 1 << 30, f"peak RSS grew by {grown / 2**20:.0f} MiB"
    assert _tree_bytes(data) < 256 << 20, f"the data folder holds {_tree_bytes(data) / 2**20:.0f} MiB"
