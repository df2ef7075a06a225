"""`ragsvc llm generate|decode-check`: talk to a language model from the terminal.

`generate` sends one prompt through a Generator (in-process engine, or any OpenAI-compatible URL) and prints
the text and, with --logprobs, each token's probability: a quick way to see what FLARE will see.
`decode-check` is a same-process A/B of batched greedy decoding against HF transformers (see
`ragsvc.serving.decode_check`). The model server itself is `ragsvc serve-model` (`ragsvc.cli.serve`).
"""

from __future__ import annotations

import json
import math
from typing import TYPE_CHECKING, Annotated

import typer

from ragsvc.cli.common import fail, settings
from ragsvc.errors import RagsvcError

if TYPE_CHECKING:  # the clients import httpx and torch: loaded only when a command runs
    from ragsvc.llm.generator import Generation, Generator

app = typer.Typer(help="Talk to a language model through ragsvc's Generator clients.", no_args_is_help=True)


def _generator(url: str | None, model: str) -> Generator:
    if url:
        from ragsvc.llm.openai_client import OpenAIGenerator

        return OpenAIGenerator(url, model=None if model == "smollm2" else model)
    from ragsvc.llm.in_process import InProcessGenerator
    from ragsvc.serving.config import EngineConfig

    return InProcessGenerator.from_config(EngineConfig.from_settings(settings(), model=model))


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
    max_tokens: Annotated[int, typer.Option(help="tokens to generate at most")] = 64,
    temperature: Annotated[float, typer.Option(help="sampling temperature; 0 = greedy")] = 0.0,
    logprobs: Annotated[int | None, typer.Option(help="show each token's logprob and N alternatives")] = None,
    seed: Annotated[int | None, typer.Option(help="sampling seed, for repeatable samples")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print text, finish reason and token counts as JSON")] = False,
) -> None:
    """Generate once and print the result."""
    from ragsvc.llm.generator import options

    generator: Generator | None = None
    try:
        # checked before the model loads, so a bad option fails at once, not after the weights are read
        options(max_tokens=max_tokens, temperature=temperature, top_logprobs=logprobs or 0, seed=seed)
        generator = _generator(url, model)
        messages = prompt if raw else [{"role": "user", "content": prompt}]
        gen = generator.generate(messages, max_tokens=max_tokens, temperature=temperature,
                                 logprobs=logprobs is not None, top_logprobs=logprobs or 0, seed=seed)
    except RagsvcError as exc:
        raise fail(exc) from exc
    finally:
        close = getattr(generator, "close", None)
        if close is not None:
            close()
    _print(gen, as_json=as_json)


@app.command("decode-check")
def decode_check(
    batch: Annotated[int, typer.Option(min=1, max=1024, help="prompts decoded together")] = 32,
    new_tokens: Annotated[int, typer.Option(min=1, max=4096, help="tokens generated per prompt (EOS ignored)")] = 64,
    threads: Annotated[int, typer.Option(min=1, max=1024, help="torch threads for both systems")] = 1,
    dtype: Annotated[str, typer.Option(help="float32 | bfloat16")] = "bfloat16",
    model: Annotated[str, typer.Option(help="packaged alias or HF folder")] = "smollm2",
    cache_dir: Annotated[str | None, typer.Option(help="where de-quantised weights are cached")] = None,
    rounds: Annotated[int, typer.Option(min=1, max=100, help="timed rounds of each system")] = 2,
    context_repeats: Annotated[int, typer.Option(min=0, max=1000,
                                                 help="background sentences mixed into the prompts")] = 0,
) -> None:
    """Batched greedy decode, ragsvc's engine vs HF transformers in this process; tok/s as JSON."""
    from ragsvc.serving.decode_check import run_decode_check

    try:
        result = run_decode_check(batch=batch, new_tokens=new_tokens, threads=threads, dtype=dtype, model=model,
                                  cache_dir=cache_dir, rounds=rounds, context_repeats=context_repeats)
    except (RagsvcError, ValueError) as exc:
        raise fail(exc) from exc
    typer.echo(json.dumps(result, indent=1))
