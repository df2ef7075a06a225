"""`ragsvc serve-model`: the OpenAI-compatible model server on its own.

This lives in `api` rather than `llm` because it imports the FastAPI app and uvicorn, which the layering test
(tests/test_architecture.py) keeps out of every layer below `api`.
"""

from __future__ import annotations

import logging
from typing import Annotated

import typer

app = typer.Typer(help="The OpenAI-compatible model server.", no_args_is_help=True, pretty_exceptions_enable=False)


@app.callback()
def _group() -> None:
    """Keeps the commands subcommands, also when this app runs on its own."""


@app.command("serve-model")
def serve_model(
    host: Annotated[str, typer.Option(help="interface to bind (0.0.0.0 for all)")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port")] = 8001,
    model: Annotated[str, typer.Option(help="packaged alias, HF folder, or .gguf")] = "smollm2",
    dtype: Annotated[str, typer.Option(help="auto | float32 | bfloat16")] = "auto",
    device: Annotated[str, typer.Option(help="auto | cpu | cuda[:N]")] = "auto",
    block_size: Annotated[int, typer.Option(help="tokens per KV block")] = 16,
    kv_cache_mb: Annotated[int, typer.Option(help="KV cache budget in MiB (all layers, K and V)")] = 1024,
    num_kv_blocks: Annotated[int | None, typer.Option(help="exact KV block count (overrides --kv-cache-mb)")] = None,
    max_num_seqs: Annotated[int, typer.Option(help="most sequences in one step")] = 64,
    max_num_batched_tokens: Annotated[int, typer.Option(help="token budget of one step")] = 2048,
    max_model_len: Annotated[int | None, typer.Option(help="longest prompt + output [default: context]")] = None,
    prefix_caching: Annotated[bool, typer.Option("--prefix-caching/--no-prefix-caching")] = True,
    threads: Annotated[int | None, typer.Option(help="torch threads on CPU [default: torch's]")] = None,
    cache_dir: Annotated[str | None, typer.Option(help="where de-quantised weights are cached")] = None,
    log_level: Annotated[str, typer.Option(help="uvicorn / ragsvc log level")] = "info",
) -> None:
    """Serve /v1/models, /v1/completions and /v1/chat/completions (any OpenAI client works against it)."""
    import uvicorn

    from ragsvc.api.model_app import create_model_app
    from ragsvc.serving.config import EngineConfig

    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        config = EngineConfig(
            model=model, dtype=dtype, device=device, block_size=block_size, num_kv_blocks=num_kv_blocks,
            kv_cache_bytes=kv_cache_mb << 20, max_num_seqs=max_num_seqs,
            max_num_batched_tokens=max_num_batched_tokens, max_model_len=max_model_len,
            enable_prefix_caching=prefix_caching, cache_dir=cache_dir, num_threads=threads,
        )
    except ValueError as err:
        typer.secho(f"error: {err}", fg=typer.colors.RED, err=True)
        raise typer.Exit(code=2) from err
    typer.echo(f"loading {model} ... then serving on http://{host}:{port}/v1")
    uvicorn.run(create_model_app(config), host=host, port=port, log_level=log_level)
