"""Index-spec bounds: every sizing parameter has an upper limit, checked when a collection is created."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from ragsvc.errors import InvalidInput
from ragsvc.index.spec import IndexLimits, IndexSpec, check_override, check_spec

LIMITS = IndexLimits()


@pytest.mark.parametrize(("setting", "value"), [
    ("hnsw_m", 1_000_000_000), ("hnsw_m", 1), ("ef_construction", 10**7), ("ef_search", 10**6),
    ("num_shards", 65), ("shortlist", 10**6), ("ivf_nlist", 10**7), ("ivf_nprobe", 10**7), ("dims", 385),
])
def test_each_parameter_past_its_bound_is_refused_by_name_and_range(setting, value):
    spec = IndexSpec(**{setting: value})
    with pytest.raises(InvalidInput) as err:
        check_spec(spec, dim=384, limits=LIMITS)
    assert f"index {setting} must be between" in err.value.message
    assert err.value.detail == {"param": f"index.{setting}"}


def test_pq_m_must_divide_the_indexed_width_and_the_message_lists_divisors():
    with pytest.raises(InvalidInput, match=r"pq_m 7 must divide the indexed width 384; use one of \[1, 2, 3, 4"):
        check_spec(IndexSpec(backend="faiss_ivfpq", pq_m=7), dim=384, limits=LIMITS)
    check_spec(IndexSpec(backend="faiss_ivfpq", pq_m=8), dim=384, limits=LIMITS)
    check_spec(IndexSpec(backend="faiss_ivfpq", pq_m=12, dims=96), dim=384, limits=LIMITS)
    with pytest.raises(InvalidInput, match="pq_m 64 must divide the indexed width 96"):
        check_spec(IndexSpec(backend="faiss_ivfpq", pq_m=64, dims=96), dim=384, limits=LIMITS)


def test_nprobe_is_capped_by_nlist():
    with pytest.raises(InvalidInput, match="ivf_nprobe must be between 1 and 64"):
        check_spec(IndexSpec(backend="faiss_ivf", ivf_nlist=64, ivf_nprobe=65), dim=384, limits=LIMITS)


def test_every_bound_itself_is_accepted_and_limits_are_configurable():
    at_max = IndexSpec(backend="faiss_hnsw", num_shards=64, hnsw_m=128, ef_construction=2048, ef_search=4096,
                       shortlist=10_000, ivf_nlist=65_536, ivf_nprobe=65_536, dims=384)
    check_spec(at_max, dim=384, limits=LIMITS)
    with pytest.raises(InvalidInput, match=r"hnsw_m must be between 2 and 32 \(RAGSVC_INDEX_LIMITS__MAX_HNSW_M\)"):
        check_spec(IndexSpec(hnsw_m=64), dim=384, limits=IndexLimits(max_hnsw_m=32))


def test_query_time_overrides_are_bounded_too():
    check_override("ef_search", None, 10)
    check_override("ef_search", 10, 10)
    with pytest.raises(InvalidInput, match="ef_search must be between 1 and 10"):
        check_override("ef_search", 11, 10)


def _tree_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


@pytest.mark.slow
def test_oversized_specs_are_refused_and_the_largest_allowed_cannot_take_the_machine(tmp_path):
    """A real `ragsvc serve` child: the issue's requests get 400s that write nothing; creating collections at
    every bound and ingesting one line grows its peak RSS by far less than 1 GB and leaves small files."""
    from ragsvc.bench.server_process import serve_process

    data = tmp_path / "data"
    huge = {"backend": "faiss_hnsw", "hnsw_m": 1_000_000_000}
    with serve_process(data) as server, httpx.Client(base_url=server.url, timeout=120) as client:
        baseline = server.rss_bytes()
        server.reset_peak_rss()
        r = client.post("/v1/collections", json={"name": "huge", "index": huge})
        assert r.status_code == 400 and "hnsw_m must be between 2 and 128" in r.text, r.text
        r = client.post("/v1/collections", json={"name": "pq7", "index": {"backend": "faiss_ivfpq", "pq_m": 7}})
        assert r.status_code == 400 and "pq_m 7 must divide the indexed width 384" in r.text, r.text
        assert client.get("/v1/collections").json() == [], "a refused create writes nothing"
        biggest = {
            "hnsw": {"backend": "hnsw", "hnsw_m": 128, "ef_construction": 2048, "ef_search": 4096, "num_shards": 64},
            "fhnsw": {"backend": "faiss_hnsw", "hnsw_m": 128, "ef_construction": 2048, "num_shards": 64},
            "ivf": {"backend": "faiss_ivfpq", "ivf_nlist": 65_536, "ivf_nprobe": 65_536, "pq_m": 192,
                    "shortlist": 10_000, "dims": 384},
        }
        for name, spec in biggest.items():
            assert client.post("/v1/collections", json={"name": name, "index": spec}).status_code == 201
            r = client.post(f"/v1/collections/{name}/documents", json={"documents": [{"text": "one line"}]})
            assert r.status_code == 201, r.text
            assert client.post(f"/v1/collections/{name}/search", json={"query": "line", "k": 1}).json()["hits"]
        grown = server.peak_rss_bytes() - baseline
    assert grown < 1 << 30, f"peak RSS grew by {grown / 2**20:.0f} MiB"
    assert _tree_bytes(data / "indexes") < 64 << 20, "index files of three one-line collections stay small"
