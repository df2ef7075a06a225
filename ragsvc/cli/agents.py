"""`ragsvc agents ...`: generative agents from the terminal (run a town's simulation, chat, interviews).

One `typer.Typer` for the group. The simulation's `run` command lives here; other agent commands live in their
own CLI modules and add themselves through a `register(app)` function, called once each at the end of this
module, so each command keeps its own file and this group stays one list of mounts.

`run` checks everything it can before loading a model (options, the town's files, the --out folder), so bad
input fails in a second and writes nothing. Ctrl-C stops after rolling back the tick in progress; the same
command resumes the run.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from ragsvc.cli.common import fail, settings
from ragsvc.errors import RagsvcError

if TYPE_CHECKING:  # loaded only when a command runs: `ragsvc --help` must not import torch
    from ragsvc.embed.embedder import SentenceTransformerEmbedder
    from ragsvc.llm.in_process import InProcessGenerator

app = typer.Typer(help="Generative agents: run a town's simulation, chat with an agent, interview agents, "
                       "reflect over a run.",
                  no_args_is_help=True)
EXIT_INTERRUPTED = 130


@app.command()
def run(
    town: Annotated[Path, typer.Argument(help="town folder: town.toml and one TOML per resident")],
    out: Annotated[Path | None, typer.Option("--out", help="run folder (new, or an earlier run's to resume "
                                                           "it)")] = None,
    name: Annotated[str | None, typer.Option("--name", help="run folder NAME under the runs root that the API "
                                                            "serves (store.simulations_dir); instead of --out")] = None,
    hours: Annotated[float, typer.Option(help="simulated hours to run")] = 4.0,
    model: Annotated[str, typer.Option(help="model alias or path for the in-process engine")] = "smollm2",
    seed: Annotated[int, typer.Option(help="seed of every random choice (model calls are greedy)")] = 0,
    tick_minutes: Annotated[int, typer.Option(help="simulated minutes per tick (5-120)")] = 15,
    start: Annotated[float, typer.Option(help="hour of day 1 the run starts at")] = 8.0,
    sequential: Annotated[bool, typer.Option("--sequential", help="send calls one at a time (no batching)")] = False,
    no_reflection: Annotated[bool, typer.Option("--no-reflection", help="agents never reflect")] = False,
    no_planning: Annotated[bool, typer.Option("--no-planning", help="personas' routines, no plans or "
                                                                    "reactions from the model")] = False,
) -> None:
    """Run a town's simulation into --out (a ragsvc data folder, transcript.jsonl, trace.jsonl); resumable."""
    from ragsvc.agents.persona import load_town
    from ragsvc.agents.sim_config import SimulationConfig
    from ragsvc.agents.simulation import check_out, run_simulation
    from ragsvc.cli.progress import TqdmProgress

    generator = None
    try:
        out = _out_folder(out, name)
        config = SimulationConfig(hours=hours, tick_minutes=tick_minutes, seed=seed, start_h=start, model=model,
                                  planning=not no_planning, reflection=not no_reflection, sequential=sequential)
        load_town(town)
        embedder = _embedder()
        check_out(town, out, config=config, embedder_id=embedder.id)
        generator = _generator(model)
        with TqdmProgress("ticks", unit="tick") as progress:
            summary = run_simulation(town, out, config=config, generator=generator, embedder=embedder,
                                     progress=progress)
    except RagsvcError as exc:
        raise fail(exc) from exc
    except KeyboardInterrupt:
        typer.secho(f"interrupted; the ticks done are kept in {out}: run the same command again to resume",
                    fg=typer.colors.YELLOW, err=True)
        raise typer.Exit(code=EXIT_INTERRUPTED) from None
    finally:
        if generator is not None:
            generator.close()
    typer.echo(f"{summary.ticks_done}/{summary.num_ticks} ticks of {summary.num_agents} agents in {out} "
               f"(this call: from tick {summary.first_tick}, {summary.wall_s:.1f} s)")


def _out_folder(out: Path | None, name: str | None) -> Path:
    from ragsvc.agents.sim_runs import SimulationRuns, runs_root
    from ragsvc.errors import InvalidInput

    if (out is None) == (name is None):
        raise InvalidInput("give the run's folder as --out FOLDER, or --name NAME for a folder under the runs root "
                           "(which GET /v1/simulations serves); not both")
    return out if out is not None else SimulationRuns(runs_root(settings().store)).folder(str(name))


def _embedder() -> SentenceTransformerEmbedder:
    from ragsvc.embed.embedder import embedder_from_settings

    return embedder_from_settings(settings().embed)


def _generator(model: str) -> InProcessGenerator:
    from ragsvc.llm.in_process import InProcessGenerator
    from ragsvc.serving.config import EngineConfig

    return InProcessGenerator.from_config(EngineConfig.from_settings(settings(), model=model))


# Commands defined in other modules register themselves here, one line each: `register(app)`.
from ragsvc.cli.agents_chat import register as register_chat  # noqa: E402 - registered last
from ragsvc.cli.agents_interview import register as register_interview  # noqa: E402 - registered last
from ragsvc.cli.agents_reflect import register as register_reflect  # noqa: E402 - registered last

register_chat(app)
register_interview(app)
register_reflect(app)
