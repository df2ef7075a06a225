"""The simulation routes over a real uvicorn: a short scripted run of the sample town (ScriptedGenerator: the
decisions a 135M model cannot be relied on to make; MiniLM embeds the memories) written under the runs root,
read back page by page, filtered, its memories looked up; bad input answered with a 4xx; a run another process is
writing listed as busy."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import duckdb
import httpx
import pytest

from ragsvc.agents.sim_config import SimulationConfig
from ragsvc.agents.simulation import TRANSCRIPT_FILE, run_simulation
from ragsvc.llm.scripted import ScriptedGenerator
from tests.agents.test_simulation import TOWN, town_reply
from tests.api.conftest import LiveServer, free_port, make_settings

pytestmark = pytest.mark.slow  # a real server (and MiniLM) per module

RUN = "town-1h"


@pytest.fixture(scope="module")
def sim_api(tmp_path_factory, minilm) -> Iterator[tuple[LiveServer, Path]]:
    from ragsvc.api.app import create_app

    data_dir = tmp_path_factory.mktemp("sim-api") / "data"
    out = data_dir / "simulations" / RUN
    config = SimulationConfig(hours=1.0, tick_minutes=15, seed=7, reflection_threshold=20.0)
    run_simulation(TOWN, out, config=config, generator=ScriptedGenerator(town_reply), embedder=minilm)
    (data_dir / "simulations" / "not-a-run").mkdir()
    duckdb.connect(str(data_dir / "simulations" / "not-a-run" / "catalog.duckdb")).close()  # a catalog, no run
    server = LiveServer(create_app(make_settings(data_dir)), free_port())
    server.start()
    yield server, out
    server.stop()


@pytest.fixture()
def api(sim_api) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=sim_api[0].url, timeout=60) as client:
        yield client


def _jsonl(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / TRANSCRIPT_FILE).read_text().splitlines()]


def test_lists_the_run_with_its_ticks_and_agents(api, sim_api):
    runs = {r["name"]: r for r in api.get("/v1/simulations").raise_for_status().json()}
    run = runs[RUN]
    rows = _jsonl(sim_api[1])
    assert run["state"] == "ready" and run["num_ticks"] == 4 and run["num_rows"] == len(rows)
    assert run["agents"] == sorted({r["agent"] for r in rows}) and run["town"]
    assert runs["not-a-run"]["state"] == "broken"
    assert api.get(f"/v1/simulations/{RUN}").json() == run


def test_pages_follow_next_without_gaps_or_repeats(api, sim_api):
    expected = _jsonl(sim_api[1])
    seen: list[dict] = []
    params: dict[str, object] = {"limit": 7}
    for _ in range(len(expected)):
        page = api.get(f"/v1/simulations/{RUN}/transcript", params=params).raise_for_status().json()
        seen.extend(page["rows"])
        if page["next_after_tick"] is None:
            break
        params = {"limit": 7, "after_tick": page["next_after_tick"], "after_seq": page["next_after_seq"]}
    assert [(r["tick"], r["agent"], r["action"], r["utterance"], r["memory_ids"]) for r in seen] == \
        [(r["tick"], r["agent"], r["action"], r["utterance"], r["memory_ids"]) for r in expected]
    assert any(r["action"] == "say" and r["utterance"] for r in seen)


def test_agent_filter_and_tick_window(api, sim_api):
    rows = _jsonl(sim_api[1])
    name = rows[0]["agent"]
    page = api.get(f"/v1/simulations/{RUN}/transcript", params={"agent": name, "limit": 500}).json()
    assert [r["agent"] for r in page["rows"]] == [r["agent"] for r in rows if r["agent"] == name]
    later = api.get(f"/v1/simulations/{RUN}/transcript", params={"after_tick": 1, "up_to_tick": 2}).json()
    assert {r["tick"] for r in later["rows"]} == {2} and later["next_after_tick"] is None


def test_memory_ids_of_a_row_open_their_memories(api, sim_api):
    row = next(r for r in _jsonl(sim_api[1]) if r["memory_ids"])
    got = api.get(f"/v1/simulations/{RUN}/memories", params={"agent": row["agent"], "ids": row["memory_ids"]})
    memories = got.raise_for_status().json()
    assert [m["id"] for m in memories] == row["memory_ids"] and all(m["text"] for m in memories)


@pytest.mark.parametrize(("path", "params", "status"), [
    ("/v1/simulations/no-such-run", {}, 404),
    ("/v1/simulations/no-such-run/transcript", {}, 404),
    ("/v1/simulations/not-a-run/transcript", {}, 404),
    ("/v1/simulations/..%2Fdata/transcript", {}, 404),
    ("/v1/simulations/%2E%2E/transcript", {}, 400),
    ("/v1/simulations/.hidden", {}, 400),
    (f"/v1/simulations/{RUN}/transcript", {"limit": 0}, 400),
    (f"/v1/simulations/{RUN}/transcript", {"limit": 501}, 400),
    (f"/v1/simulations/{RUN}/transcript", {"after_tick": -2}, 400),
    (f"/v1/simulations/{RUN}/transcript", {"after_tick": "x"}, 400),
    (f"/v1/simulations/{RUN}/memories", {"agent": "x"}, 400),
    (f"/v1/simulations/{RUN}/memories", {"agent": "x", "ids": [-1]}, 400),
    (f"/v1/simulations/{RUN}/memories", {"agent": "x", "ids": [2**64]}, 400),
    (f"/v1/simulations/{RUN}/memories", {"agent": "x", "ids": list(range(101))}, 400),
    ("/v1/simulations", {"limit": 10_000}, 400),
])
def test_bad_input_is_a_clear_4xx(api, path, params, status):
    response = api.get(path, params=params)
    assert response.status_code == status, response.text
    assert response.json()["detail"]


def test_a_run_being_written_is_busy_and_answers_409(api, sim_api):
    """Another process holds the run's catalog open for writing, as `ragsvc agents run` does while it runs."""
    folder = sim_api[1].parent / "being-written"
    folder.mkdir()
    script = ("import duckdb, sys; c = duckdb.connect(sys.argv[1]); "
              "c.execute('CREATE TABLE sim_run (key VARCHAR)'); print('open', flush=True); sys.stdin.read()")
    holder = subprocess.Popen([sys.executable, "-c", script, str(folder / "catalog.duckdb")],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "open"
        runs = {r["name"]: r for r in api.get("/v1/simulations").json()}
        assert runs["being-written"]["state"] == "busy" and "being written" in runs["being-written"]["detail"]
        response = api.get("/v1/simulations/being-written/transcript")
        assert response.status_code == 409 and "once that process stops" in response.json()["detail"]
    finally:
        holder.communicate("", timeout=30)


def test_openapi_documents_the_routes_with_response_models(api):
    paths = api.get("/openapi.json").json()["paths"]
    transcript = paths["/v1/simulations/{run}/transcript"]["get"]
    schema = transcript["responses"]["200"]["content"]["application/json"]["schema"]
    assert schema["$ref"].endswith("/TranscriptPagePublic")
    assert {"/v1/simulations", "/v1/simulations/{run}", "/v1/simulations/{run}/memories"} <= set(paths)


@pytest.mark.parametrize(("args", "message"), [
    ([], "--out FOLDER, or --name NAME"),
    (["--out", "x", "--name", "y"], "not both"),
    (["--name", "../elsewhere"], "is not valid"),
])
def test_agents_run_needs_one_folder_and_a_plain_name(tmp_path, monkeypatch, args, message):
    """`ragsvc agents run` refuses these before it loads any model and writes nothing."""
    from typer.testing import CliRunner

    from ragsvc.cli import app

    monkeypatch.setenv("RAGSVC_STORE__DATA_DIR", str(tmp_path / "data"))
    result = CliRunner().invoke(app, ["agents", "run", str(TOWN), *args])
    assert result.exit_code != 0 and message in result.output
    assert not (tmp_path / "data").exists()
