"""A full disk under a real server: writes it cannot store answer 507 saying so, writes it did store answer 201
even when the index save after them fails, and nothing acknowledged is lost once space comes back.

The disk is real: a 24 MiB tmpfs mounted for the test (skipped where mounting is not permitted), filled by
real ingests through uvicorn into duckdb and the index files.
"""

from __future__ import annotations

import errno
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from ragsvc.config import ApiSettings, Settings, StoreSettings
from ragsvc.errors import disk_full
from tests.api.conftest import LiveServer, free_port

pytestmark = pytest.mark.slow


@contextmanager
def _tmpfs(where: Path, size: str) -> Iterator[Path]:
    where.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {mounted.stderr.decode(errors='replace').strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


@pytest.fixture()
def small_disk(tmp_path: Path) -> Iterator[Path]:
    with _tmpfs(tmp_path / "disk", "24m") as disk:
        yield disk


def _serve(data_dir: Path) -> LiveServer:
    from ragsvc.api.app import create_app

    settings = Settings(store=StoreSettings(data_dir=data_dir, save_interval_s=0), api=ApiSettings())
    server = LiveServer(create_app(settings), free_port())
    server.start()
    return server


def _batch(n: int) -> list[dict]:
    pad = "x" * 30_000  # stored with the document and again with its chunk: fills the disk in a few batches
    return [{"id": f"b{n}-{i}", "text": f"note {n} {i} about disks", "metadata": {"pad": pad}} for i in range(40)]


def test_a_full_disk_answers_507_and_loses_nothing_acknowledged(small_disk: Path) -> None:
    acknowledged: list[str] = []
    refusals: list[httpx.Response] = []
    server = _serve(small_disk / "data")
    try:
        with httpx.Client(base_url=server.url, timeout=120) as client:
            assert client.post("/v1/collections", json={"name": "notes"}).status_code == 201
            for n in range(60):
                r = client.post("/v1/collections/notes/documents", json={"documents": _batch(n)})
                assert r.status_code in (201, 507), r.text  # never a bare 500
                if r.status_code == 201:
                    acknowledged += r.json()["ids"]
                else:
                    refusals.append(r)
                    if len(refusals) == 3:
                        break
            assert refusals, "the disk never filled"
            for r in refusals:
                body = r.json()
                assert body["error"] == "insufficient_storage" and "disk" in body["detail"], r.text
                assert body["request_id"] == r.headers["x-request-id"]
            assert client.post("/v1/collections/notes/search", json={"query": "disks", "k": 3}).status_code == 200
            subprocess.run(["mount", "-o", "remount,size=256m", str(small_disk)], check=True)
            r = client.post("/v1/collections/notes/documents", json={"documents": _batch(99)})
            assert r.status_code == 201, r.text  # space came back: the same server writes again
            acknowledged += r.json()["ids"]
    finally:
        server.stop()
    reopened = _serve(small_disk / "data")  # the index files are at most the last complete save: catch up
    try:
        with httpx.Client(base_url=reopened.url, timeout=120) as client:
            stored = {d["id"] for d in client.get("/v1/collections/notes/documents", params={"limit": 10_000}).json()}
            assert set(acknowledged) <= stored
            hits = client.post("/v1/collections/notes/search", json={"query": "note 99 0 about disks", "k": 1})
            assert hits.json()["hits"][0]["document_id"] in acknowledged
    finally:
        reopened.stop()


def test_a_failed_index_save_after_a_commit_still_acknowledges_the_write(tmp_path: Path, caplog) -> None:
    """Only the index folder is on the full disk: the catalog commits, the save after it fails, and the write is
    acknowledged (the indexes are derived from the catalog); the next save, once there is room, catches up."""
    data = tmp_path / "data"
    server = _serve(data)
    try:
        with _tmpfs(data / "indexes", "4m") as indexes, httpx.Client(base_url=server.url, timeout=120) as client:
            assert client.post("/v1/collections", json={"name": "notes"}).status_code == 201
            filler = indexes / "filler"
            with open(filler, "wb") as handle, pytest.raises(OSError):  # take every byte the disk has left
                while True:
                    handle.write(b"\0" * (1 << 16))
                    handle.flush()
            acknowledged = []
            for n in range(3):
                r = client.post("/v1/collections/notes/documents", json={"documents": _batch(n)[:5]})
                assert r.status_code == 201, r.text
                acknowledged += r.json()["ids"]
            assert any("saving its indexes failed" in rec.getMessage() for rec in caplog.records)
            hits = client.post("/v1/collections/notes/search", json={"query": "note 2 4 about disks", "k": 1}).json()
            assert hits["hits"][0]["document_id"] == "b2-4"  # searches read the in-memory index meanwhile
            filler.unlink()
            server.stop()  # closing saves the indexes, now that there is room
            reopened = _serve(data)
            try:
                stored = client.get(f"{reopened.url}/v1/collections/notes/documents", params={"limit": 100}).json()
                assert {d["id"] for d in stored} == set(acknowledged)
                hits = client.post(f"{reopened.url}/v1/collections/notes/search",
                                   json={"query": "note 1 3 about disks", "k": 1}).json()
                assert hits["hits"][0]["document_id"] == "b1-3"
            finally:
                reopened.stop()
    finally:
        server.stop()


def test_disk_full_is_read_from_the_error_or_what_it_was_raised_from() -> None:
    assert disk_full(OSError(errno.ENOSPC, "No space left on device"))
    assert disk_full(OSError(errno.EDQUOT, "Disk quota exceeded"))
    assert not disk_full(OSError(errno.EACCES, "Permission denied"))
    try:
        try:
            raise RuntimeError('Failed to commit: Could not write file "x.wal": No space left on device')
        except RuntimeError:
            raise ValueError("cannot rollback - no transaction is active") from None
    except ValueError as masked:
        assert not disk_full(masked)  # `from None` cut the chain: nothing left to read
    try:
        try:
            raise RuntimeError('Failed to commit: Could not write file "x.wal": No space left on device')
        except RuntimeError:
            raise ValueError("cannot rollback - no transaction is active")  # noqa: B904 - the chain is the point
    except ValueError as chained:
        assert disk_full(chained)
