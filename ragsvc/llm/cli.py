"""`ragsvc llm generate`: one prompt through a Generator (in-process engine, or any OpenAI-compatible URL),
printing the text and, with --logprobs, each token's probability. A quick way to see what FLARE will see.

(`ragsvc serve-model` is in `ragsvc.api.model_cli`: it needs FastAPI, which stays above this layer.)
"""

from __future__ import annotations

import json
import math
from typing import Annotated

import typer

from ragsvc.errors import RagsvcError
from ragsvc.llm.generator import Generation, Generator

app = typer.Typer(help="Talk to a language model through ragsvc's Generator clients.", no_args_is_help=True,
                  pretty_exceptions_enable=False)


@app.callback()
def _group() -> None:
    """Keeps the commands subcommands, also when this app runs on its own."""


def _generator(url: str | None, model: str) -> Generator:
    if url:
        from ragsvc.llm.openai_client import OpenAIGenerator

        return OpenAIGenerator(url, model=None if model == "smollm2" else model)
    from ragsvc.llm.in_process import InProcessGenerator
    from ragsvc.serving.config import EngineConfig

    return InProcessGenerator.from_config(EngineConfig(model=model))


def _print(gen: Generation, *, as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps({
            "text": gen.text, "finish_reason": gen.finish_reason,
            "usage": {"prompt_tokens": gen.usage.prompt_tokens, "completion_tokens": gen.usage.completion_tokens},
            "tokens": [{"token": t.token, "logprob": t.logprob, "top": t.top} for t in gen.tokens],
        }))
        return
    typer.echo(gen.text)
    for t in gen.tokens:
        alts = ", ".join(f"{s!r} {math.exp(lp):.2f}" for s, lp in t.top)
        typer.echo(f"  {t.token!r:>20} p={math.exp(t.logprob):.3f}  [{alts}]")


@app.command()
def generate(
    prompt: Annotated[str, typer.Argument(help="the user message (or raw text with --raw)")],
    url: Annotated[str | None, typer.Option(help="OpenAI-compatible base URL, e.g. http://127.0.0.1:8001/v1; "
                                                  "default: run the engine in this process")] = None,
    model: Annotated[str, typer.Option(help="model alias/path (in-process) or served model name")] = "smollm2",
    raw: Annotated[bool, typer.Option("--raw", help="send as a plain completion, no chat template")] = False,
    max_tokens: Annotated[int, typer.Option()] = 64,
    temperature: Annotated[float, typer.Option()] = 0.0,
    logprobs: Annotated[int | None, typer.Option(help="show each token's logprob and N alternatives")] = None,
    seed: Annotated[int | None, typer.Option()] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Generate once and print the result."""
    generator: Generator | None = None
    try:
        generator = _generator(url, model)
        messages = prompt if raw else [{"role": "user", "content": prompt}]
        gen = generator.generate(messages, max_tokens=max_tokens, temperature=temperature,
                                 logprobs=logprobs is not None, top_logprobs=logprobs or 0, seed=seed)
    except RagsvcError as err:
        typer.secho(f"error: {err.message}", fg=typer.colors.RED, err=True)
        raise typer.Exit(code=2) from err
    finally:
        close = getattr(generator, "close", None)
        if close is not None:
            close()
    _print(gen, as_json=as_json)
