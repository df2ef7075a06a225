"""The per-CPU plan cache: a plan is measured once per key, read back after, and a damaged file is measured
again rather than trusted."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from ragsvc import native
from ragsvc.serving.layers import plan_cache


@dataclass(frozen=True)
class Plan:
    tokens: int
    ms: list[float]


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setattr(native, "cache_dir", lambda: tmp_path / "kernels")
    return tmp_path / "kernels"


def test_measured_once_per_key(cache) -> None:
    calls = []

    def measure() -> Plan:
        calls.append(1)
        return Plan(tokens=64 * len(calls), ms=[1.5, 2.0])

    first = plan_cache.cached_plan("probe", ["cpu", 1], Plan, measure)
    again = plan_cache.cached_plan("probe", ["cpu", 1], Plan, measure)
    assert first == again == Plan(tokens=64, ms=[1.5, 2.0]) and len(calls) == 1
    other = plan_cache.cached_plan("probe", ["cpu", 2], Plan, measure)  # another key: measured anew
    assert other.tokens == 128 and len(calls) == 2
    assert sorted(p.name.split("-")[0] for p in cache.iterdir()) == ["probe", "probe"]
    assert not list(cache.glob("*.tmp"))


@pytest.mark.parametrize("damage", ["{not json", '{"tokens": 1}', '{"tokens": 1, "ms": [], "extra": 2}', ""])
def test_damaged_file_is_measured_again(cache, damage) -> None:
    path = plan_cache.plan_path("probe", "key")
    path.parent.mkdir(parents=True)
    path.write_text(damage)
    plan = plan_cache.cached_plan("probe", "key", Plan, lambda: Plan(tokens=7, ms=[0.1]))
    assert plan == Plan(tokens=7, ms=[0.1])
    assert plan_cache.cached_plan("probe", "key", Plan, lambda: Plan(tokens=8, ms=[])) == plan
