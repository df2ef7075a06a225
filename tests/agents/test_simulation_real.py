"""The simulation with real parts: one tick with SmolLM2 and MiniLM in process; `ragsvc agents run` killed with
SIGKILL in the middle of a run and run again, which must resume with no record lost or written twice; and the
command's refusals of bad input (before any model loads, writing nothing)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ragsvc.agents.sim_config import SimulationConfig
from ragsvc.agents.simulation import TRACE_FILE, TRANSCRIPT_FILE, open_run, run_simulation
from ragsvc.cli import app
from tests.llm.conftest import MODEL_CACHE

TOWN = Path(__file__).resolve().parents[2] / "agents" / "town"
REPO = TOWN.parents[1]


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


@pytest.mark.slow
def test_one_real_tick_with_smollm2(tmp_path):
    from ragsvc.embed.embedder import SentenceTransformerEmbedder
    from ragsvc.llm.in_process import InProcessGenerator
    from ragsvc.serving.config import EngineConfig

    config = SimulationConfig(hours=0.25, tick_minutes=15, seed=3)
    embedder = SentenceTransformerEmbedder()
    # SmolLM2 as it ships (a Q4_1 GGUF) on the q4 kernels: on a CPU without bf16 the de-quantised model decodes
    # in float32 at about half the speed (a 60 s tick against 34 s on a Zen 3)
    config_q4 = EngineConfig(model="smollm2", cache_dir=str(MODEL_CACHE), weights="q4-all")
    with InProcessGenerator.from_config(config_q4) as gen:
        summary = run_simulation(TOWN, tmp_path / "run", config=config, generator=gen, embedder=embedder)
    assert summary.ticks_done == 1
    (trace,) = _jsonl(tmp_path / "run" / TRACE_FILE)
    assert trace["calls"] >= 5 and trace["batches"] < trace["calls"]  # the phases went as batches
    assert trace["calls_by_phase"]["plan"] == 5 and trace["completion_tokens"] > 0
    assert 0 < trace["cached_prompt_tokens"] < trace["prompt_tokens"]  # the town + persona prefix was reused
    town, streams, rows = open_run(tmp_path / "run", embedder=embedder)
    try:
        assert Counter(r["action"] for r in rows)["act"] == 5
        assert all(r["location"] in {p.name for p in town.places} for r in rows)
        assert all(len(s) > 0 for s in streams.values())
        assert not streams["Ada Okafor"].tables.pending(limit=100)  # this tick's memories are all rated
    finally:
        streams.close()


def _command(out: Path) -> list[str]:
    return [sys.executable, "-c", "from ragsvc.cli import main; main()", "agents", "run", str(TOWN), "--out", str(out),
            "--hours", "0.75", "--seed", "5", "--no-planning", "--no-reflection"]


@pytest.mark.slow
def test_kill_9_mid_run_then_resume_loses_and_duplicates_nothing(tmp_path):
    out = tmp_path / "run"
    env = {**os.environ, "RAGSVC_MODEL__CACHE_DIR": str(MODEL_CACHE), "RAGSVC_MODEL__WEIGHTS": "q4-all",
           "RAGSVC_LOG_LEVEL": "WARNING"}  # q4-all: as in test_one_real_tick_with_smollm2
    proc = subprocess.Popen(_command(out), cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 600
        while len(_jsonl(out / TRACE_FILE)) < 1:  # the first tick is committed: kill it during the second
            assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
            assert time.monotonic() < deadline, "no tick committed in 10 minutes"
            time.sleep(0.2)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    killed_at = len(_jsonl(out / TRACE_FILE))
    assert 1 <= killed_at < 3
    done = subprocess.run(_command(out), cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"from tick {killed_at}" in done.stdout
    trace, rows = _jsonl(out / TRACE_FILE), _jsonl(out / TRANSCRIPT_FILE)
    assert [t["tick"] for t in trace] == [0, 1, 2]
    assert Counter(r["tick"] for r in rows if r["action"] == "act") == {0: 5, 1: 5, 2: 5}
    _, streams, opened_rows = open_run(out)
    try:
        assert opened_rows == rows
        for name, stream in streams.items():
            memories = stream.recent(100_000)
            keys = [(m.kind, m.text, m.created_h) for m in memories if m.kind != "plan"]
            assert len(keys) == len(set(keys)), f"{name} holds a memory twice"
            observed = sorted(i for r in rows if r["agent"] == name and r["action"] == "observe"
                              for i in r["memory_ids"])
            assert observed == sorted(m.id for m in memories if m.kind == "observation" and " is at " in m.text)
            chats = Counter((round(m.created_h, 4), m.metadata["partner"]) for m in memories if m.kind == "chat")
            talks = Counter((r["time_h"], r["partner"] if r["agent"] == name else r["agent"]) for r in rows
                            if r["action"] == "say" and name in (r["agent"], r["partner"]))
            assert set(chats) == set(talks) and set(chats.values()) <= {1}
    finally:
        streams.close()


def _cli(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["agents", "run", *args])
    return result.exit_code, result.output


def test_the_command_refuses_bad_input_and_writes_nothing(tmp_path):
    out = tmp_path / "out"
    for bad in (["--hours", "0"], ["--hours", "500"], ["--tick-minutes", "2"], ["--tick-minutes", "600"]):
        code, text = _cli(str(TOWN), "--out", str(out), *bad)
        assert code == 2 and "error:" in text, text
    broken = tmp_path / "town"
    broken.mkdir()
    for p in TOWN.glob("*.toml"):
        (broken / p.name).write_text(p.read_text())
    town_toml = (TOWN / "town.toml").read_text()
    (broken / "town.toml").write_text(town_toml.replace('host = "Mei Tanaka"', 'host = "Nobody"'))
    code, text = _cli(str(broken), "--out", str(out))
    line = next(i for i, s in enumerate((broken / "town.toml").read_text().splitlines(), 1) if s.startswith("host"))
    assert code == 2 and f"town.toml:{line}: event host 'Nobody'" in text.replace("\n", ""), text
    assert not out.exists()


def test_the_command_refuses_a_folder_of_another_run(tmp_path, embedder):
    from ragsvc.llm.scripted import ScriptedGenerator
    from tests.agents.test_simulation import town_reply

    out = tmp_path / "run"
    run_simulation(TOWN, out, config=SimulationConfig(hours=0.25, embedder=""), generator=ScriptedGenerator(town_reply),
                   embedder=embedder)
    code, text = _cli(str(TOWN), "--out", str(out), "--seed", "9")
    assert code == 2 and "holds another run" in text.replace("\n", ""), text
    assert [t["tick"] for t in _jsonl(out / TRACE_FILE)] == [0]
