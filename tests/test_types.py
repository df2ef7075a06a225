"""ServedBy: the record of which structure answered a search, its one-line form and its JSON form."""

from __future__ import annotations

import json
from dataclasses import fields, replace

import pytest

from ragsvc.types import ServedBy


@pytest.mark.parametrize(("served", "text"), [
    (ServedBy.ann(backend="faiss_hnsw", num_shards=4, dims=256), "faiss_hnsw[4 shard(s), d=256]"),
    (ServedBy.ann(backend="hnsw", num_shards=2, dims=128, shortlist=200, rescore_dtype="int8", tail_only=True),
     "hnsw[2 shard(s), d=128]+rescore(L=200, int8)"),
    (ServedBy.exact_prefix(dims=32, shortlist=200, rescore_dtype="float16"),
     "exact-prefix(d=32)+rescore(L=200, float16)"),
    (ServedBy.exact_subset(num_ids=30), "exact-subset(30 ids, full width)"),
    (ServedBy.exact_subset(num_ids=30, rescore_dtype="int8"), "exact-subset(30 ids, rescore int8)"),
    (ServedBy.exact_subset(num_ids=30, rescore_dtype="int4", tail_only=True),
     "exact-subset(30 ids, prefix + rescore int4)"),
    (ServedBy.untrained(num_ids=600, train_at=1024), "exact(untrained: 600 < 1024)"),
    (ServedBy.empty_filter(), "filter"),
])
def test_str_is_the_one_line_form(served, text):
    assert str(served) == text
    assert f"({served}; 1.0 ms)" == f"({text}; 1.0 ms)"  # the CLI's f-string


def test_stages_append_in_order_and_leave_the_original_alone():
    base = ServedBy.ann(backend="hnsw", num_shards=1, dims=384)
    reranked = base.with_stage("graph")
    assert str(reranked) == "hnsw[1 shard(s), d=384]+graph"
    assert str(reranked.with_stage("rerank")) == "hnsw[1 shard(s), d=384]+graph+rerank"
    assert base.stages == () and reranked.stages == ("graph",)
    assert str(ServedBy.empty_filter().with_stage("graph")) == "filter+graph"


def test_to_dict_is_json_ready_and_names_every_field():
    served = ServedBy.ann(backend="hnsw", num_shards=2, dims=128, shortlist=200,
                          rescore_dtype="int8").with_stage("graph")
    data = served.to_dict()
    assert set(data) == {f.name for f in fields(ServedBy)}
    assert json.loads(json.dumps(data)) == data
    assert data["path"] == "ann" and data["stages"] == ["graph"] and data["num_ids"] is None
    lists = {"stages": tuple(data["stages"]), "missing_shards": tuple(data["missing_shards"])}
    assert ServedBy(**{**data, **lists}) == served  # the fields are the whole record


def test_ray_served_answers_name_their_replicas_and_missing_shards():
    served = ServedBy.ann(backend="hnsw", num_shards=2, dims=384, replicas=2)
    assert str(served) == "hnsw[2 shard(s) x2 replica(s) on ray, d=384]"
    partial = replace(served, missing_shards=("shard-0",))
    assert str(partial) == "hnsw[2 shard(s) x2 replica(s) on ray, d=384]+partial(missing shard-0)"
    assert partial.to_dict()["missing_shards"] == ["shard-0"]
