"""`ragsvc agents reflect RUN --model M`: every resident of a simulation run reflects once with model M.

For runs whose own model wrote few usable reflections (a 135M model rarely does): a stronger model reflects over
the same memories with the simulation's prompts, and the interviews can then measure what reflections add
(agents/run_reflection.py). It writes into RUN's catalog; reflect over a copy to keep the run as simulated.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ragsvc.cli.common import fail, settings
from ragsvc.errors import RagsvcError


def register(app: typer.Typer) -> None:
    app.command("reflect")(reflect)


def reflect(
    run_dir: Annotated[Path, typer.Argument(help="a simulation folder (the --out of `ragsvc agents run`)")],
    model: Annotated[str | None, typer.Option(help="local model: packaged alias, HF folder or .gguf \\[default: "
                                                   "RAGSVC_MODEL__MODEL or smollm2]")] = None,
    recent: Annotated[int, typer.Option(help="most recent memories the questions come from (the paper: 100)")
                      ] = 100,
    questions: Annotated[int, typer.Option(help="questions per resident (the paper: 3)")] = 3,
    insights: Annotated[int, typer.Option(help="insights per question at most (the paper: 5)")] = 5,
    max_tokens: Annotated[int, typer.Option(help="tokens per reply at most")] = 256,
) -> None:
    """Every resident of RUN_DIR reflects once (questions -> evidence -> cited insights), stored as reflections."""
    from ragsvc.agents.reflection import ReflectionOptions
    from ragsvc.agents.run_reflection import reflect_run
    from ragsvc.agents.simulation import CATALOG_FILE
    from ragsvc.embed.embedder import embedder_from_settings
    from ragsvc.llm.in_process import InProcessGenerator
    from ragsvc.serving.config import EngineConfig

    config = settings()
    try:
        options = ReflectionOptions(num_recent=recent, num_questions=questions, max_insights=insights,
                                    max_tokens=max_tokens)
        if not (run_dir / CATALOG_FILE).is_file():  # before loading any model: a typo fails at once
            raise ValueError(f"{run_dir} holds no simulation; pass the --out folder of `ragsvc agents run`")
        embedder = embedder_from_settings(config.embed)
        with InProcessGenerator.from_config(EngineConfig.from_settings(config, model=model)) as generator:
            stored = reflect_run(run_dir, generator, embedder=embedder, options=options)
    except (RagsvcError, ValueError) as exc:
        raise fail(exc) from exc
    for agent, reflections in stored.items():
        typer.echo(f"{agent}: {len(reflections)} reflection(s)")
        for r in reflections:
            typer.echo(f"  [{r.id}] {r.text} (evidence {list(r.evidence)}, importance {r.importance or 0:.1f})")
