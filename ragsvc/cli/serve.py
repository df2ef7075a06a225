"""`ragsvc serve`, `ragsvc quickstart`, `ragsvc serve-model`: the REST API, and the OpenAI-compatible model server.

The engine's config comes from the settings' `model` section (`EngineConfig.from_settings`), so RAGSVC_MODEL__*
configures `serve --with-model` and `serve-model` alike; `serve-model`'s flags override it per run.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated

import typer

from ragsvc.cli.common import SAMPLE_COLLECTION, DataDir, fail, settings
from ragsvc.cli.ingest import ingest_sample

if TYPE_CHECKING:
    from ragsvc.api.app import Extension
    from ragsvc.config import Settings

app = typer.Typer()

Insecure = Annotated[bool, typer.Option(
    "--insecure", help="allow a non-loopback address with no API keys (anyone who can connect is admin)")]
AllowedHost = Annotated[list[str] | None, typer.Option(
    "--allowed-host", help="a Host header name to accept besides loopback and the bound address (repeatable; '*' "
                           "for any) \[default: RAGSVC_API__ALLOWED_HOSTS]")]


def _refuse_open_exposure(config: Settings, *, key_count: Callable[[], int], where: str) -> None:
    """Exit with an error when the server would listen beyond loopback with no API key and no --insecure."""
    from ragsvc.api.auth import is_loopback
    from ragsvc.errors import RagsvcError

    if is_loopback(config.api.host) or config.api.insecure:
        return
    try:
        if key_count() > 0:
            return
    except RagsvcError as exc:  # the catalog held by another process, a damaged keys file
        raise fail(exc) from exc
    raise fail(f"refusing to serve on {config.api.host} without API keys: anyone who can connect could read and "
               f"delete everything. Create one with `ragsvc keys create NAME --scope admin` ({where}), bind "
               "127.0.0.1, or pass --insecure")


def _catalog_key_count(config: Settings) -> int:
    from ragsvc.retrieval.vector_store import CATALOG_FILE
    from ragsvc.store.catalog import Catalog

    catalog = Catalog(config.store.data_dir / CATALOG_FILE)
    try:
        return len(catalog.api_keys().list())
    finally:
        catalog.close()


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="interface to bind \\[default: 127.0.0.1]")] = None,
    port: Annotated[int | None, typer.Option(help="TCP port \\[default: 8000]")] = None,
    data_dir: DataDir = None,
    sample: Annotated[bool, typer.Option("--sample", help="ingest the bundled sample corpus first")] = False,
    with_model: Annotated[bool, typer.Option(
        "--with-model", help="also host the local LLM (OpenAI-compatible /v1/chat/completions) in this process"
    )] = False,
    insecure: Insecure = False,
    allowed_host: AllowedHost = None,
) -> None:
    """Serve the REST API, with a web console at / and OpenAPI docs at /docs.

    GET /health answers 200 once indexes are loaded.
    """
    from ragsvc.api.app import create_app
    from ragsvc.cli.server_start import bind, run
    from ragsvc.errors import RagsvcError

    config = settings(data_dir, host=host, port=port, insecure=insecure or None, allowed_hosts=allowed_host)
    try:  # a catalog another process holds, or a folder that cannot be one: one line here, not a startup traceback
        keys_on = _catalog_key_count(config) > 0
    except RagsvcError as exc:
        raise fail(exc) from exc
    _refuse_open_exposure(config, key_count=lambda: _catalog_key_count(config), where="on this --data-dir")
    sock = bind(config.api.host, config.api.port)  # before the model, the sample and the app's startup (seconds)
    try:
        extensions = _prepare(config, sample=sample, with_model=with_model)
    except BaseException:
        sock.close()
        raise
    base = f"http://{config.api.host}:{config.api.port}"
    typer.echo(f"starting on {base}: loading the indexes{' and the model' if with_model else ''}")

    def ready(collections: list[str]) -> None:  # printed once requests are answered, so the lines can be pasted
        typer.echo(try_lines(base, collections=collections, with_model=with_model, keys_on=keys_on))

    run(lambda on_load_error: create_app(config, extensions=extensions, on_load_error=on_load_error,
                                         on_ready=ready), sock,
        log_level="info", describe=lambda exc: f"cannot load the data folder {config.store.data_dir} ({exc}); fix "
                                                 "or move what is in the way, or point --data-dir at another folder")


def _prepare(config: Settings, *, sample: bool, with_model: bool) -> list[Extension]:
    """What `serve` does before the server starts: check the model, set threads, load the sample, say where."""
    extensions: list[Extension] = []
    if with_model:
        from ragsvc.api.model_app import model_extension
        from ragsvc.cli.server_start import check_model
        from ragsvc.serving.config import EngineConfig

        try:
            engine_config = EngineConfig.from_settings(config)
        except ValueError as exc:
            raise fail(exc) from exc
        check_model(engine_config)
        extensions.append(model_extension(engine_config))
        if config.generator.url:  # the URL wins (answer/composition.py): say so, the model is loaded regardless
            typer.secho(f"note: RAGSVC_GENERATOR__URL is set, so answers, HyDE and chats use {config.generator.url}; "
                        "the model hosted here serves only its /v1 OpenAI routes", fg=typer.colors.YELLOW, err=True)
    else:  # a hosted model sets its own threads (RAGSVC_MODEL__NUM_THREADS) and shares them with the embedder
        from ragsvc.retrieval.embed_batcher import lanes_for, limit_model_threads, threads_per_lane

        cores = os.cpu_count() or 1
        limit_model_threads(threads_per_lane(config.api.embed_threads, num_cores=cores,
                                             lanes=lanes_for(config.api.embed_lanes, cores)))
    if sample:
        chunks = ingest_sample(config.store.data_dir)
        typer.echo(f"sample collection ready: {chunks} chunks in {config.store.data_dir}")
    return extensions


def try_lines(base: str, *, collections: list[str], with_model: bool, keys_on: bool) -> str:
    """The ready line and `curl` commands that work on this server as it is: a search of the sample, or of a
    collection it holds, or, with none, how to add one. With keys on, each command sends one from $RAGSVC_KEY."""
    auth, lines = _key_lines(f"ready on {base} (console: {base}/, docs: {base}/docs). Try:", keys_on)
    if SAMPLE_COLLECTION in collections:
        name, question = SAMPLE_COLLECTION, "how does paged attention save memory?"
    elif collections:
        name, question = collections[0], "your question"
    else:
        lines.append(f"  curl -s{auth} {base}/v1/collections")
        lines.append("  no collections yet: add documents with `ragsvc ingest FILES -c NAME` on this --data-dir, "
                     f"or POST {base}/v1/collections (see {base}/docs)")
        return "\n".join(lines)
    lines.append(f"  curl -s{auth} {base}/v1/collections/{name}/search -H 'content-type: application/json' "
                 f"-d '{{\"query\": \"{question}\", \"k\": 3, \"mode\": \"hybrid\"}}'")
    if with_model:
        lines.append(f"  curl -s{auth} {base}/v1/answer -H 'content-type: application/json' -d '{{\"question\": "
                     f"\"{question}\", \"collection\": \"{name}\"}}'")
    return "\n".join(lines)


@app.command()
def quickstart(data_dir: DataDir = None,
               port: Annotated[int | None, typer.Option(help="TCP port \\[default: 8000]")] = None) -> None:
    """Ingest the bundled sample corpus and serve the API, with the local model for answers, on 127.0.0.1:8000
    (the README's first command)."""
    serve(host=None, port=port, data_dir=data_dir, sample=True, with_model=True, insecure=False, allowed_host=None)


@app.command("serve-model")
def serve_model(
    host: Annotated[str, typer.Option(help="interface to bind (0.0.0.0 for all)")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port")] = 8001,
    model: Annotated[str | None, typer.Option(
        help="packaged alias, HF folder, or .gguf \\[default: smollm2, or RAGSVC_MODEL__MODEL]")] = None,
    dtype: Annotated[str | None, typer.Option(
        help="auto | float32 | bfloat16 \\[default: auto, or RAGSVC_MODEL__DTYPE]")] = None,
    device: Annotated[str | None, typer.Option(
        help="auto | cpu | cuda[:N] \\[default: auto, or RAGSVC_MODEL__DEVICE]")] = None,
    weights: Annotated[str | None, typer.Option(
        help="bf16 | int8 | q4 | q4-all: the linears' weights as the model ships them, int8 per channel, 4-bit "
             "blocks (LM head int8), or 4-bit everywhere (quantised once at load, cached beside the de-quantised "
             "weights) "
             "\\[default: bf16, or RAGSVC_MODEL__WEIGHTS]")] = None,
    block_size: Annotated[int, typer.Option(help="tokens per KV block")] = 16,
    kv_cache_mb: Annotated[int | None, typer.Option(
        help="KV cache budget in MiB (all layers, K and V) \\[default: 1024, or RAGSVC_MODEL__KV_CACHE_BYTES]")] = None,
    num_kv_blocks: Annotated[int | None, typer.Option(help="exact KV block count (overrides --kv-cache-mb)")] = None,
    max_num_seqs: Annotated[int | None, typer.Option(
        help="most sequences in one step \\[default: 64, or RAGSVC_MODEL__MAX_NUM_SEQS]")] = None,
    max_num_batched_tokens: Annotated[int, typer.Option(help="token budget of one step")] = 2048,
    max_model_len: Annotated[int | None, typer.Option(help="longest prompt + output \\[default: context]")] = None,
    prefix_caching: Annotated[bool, typer.Option("--prefix-caching/--no-prefix-caching",
                                                  help="reuse KV blocks of prompts that share a prefix")] = True,
    threads: Annotated[int | None, typer.Option(
        help="torch threads on CPU \\[default: RAGSVC_MODEL__NUM_THREADS, or torch's]")] = None,
    cache_dir: Annotated[str | None, typer.Option(
        help="where de-quantised weights are cached \\[default: RAGSVC_MODEL__CACHE_DIR, or <data dir>/models]"
    )] = None,
    max_prefill_tokens: Annotated[int | None, typer.Option(
        help="most prompt tokens per step, after decodes \\[default: the rest of the step budget]")] = None,
    prefill_order: Annotated[str, typer.Option(
        help="admit waiting requests by arrival (FCFS) or shortest prompt first (bounded by --max-wait-steps)")
                             ] = "arrival",
    max_wait_steps: Annotated[int, typer.Option(help="with --prefill-order shortest: steps before a request "
                                                     "is admitted ahead of all younger ones")] = 32,
    speculative: Annotated[str | None, typer.Option(
        help="prompt-lookup: greedy requests draft tokens from n-gram matches in their own prompt and output and "
             "verify them in one forward \\[default: off]")] = None,
    num_speculative_tokens: Annotated[int, typer.Option(help="most drafts per step with --speculative")] = 4,
    log_level: Annotated[str | None, typer.Option(
        help="debug | info | warning | error: uvicorn's and ragsvc's \\[default: info, or RAGSVC_LOG_LEVEL]")] = None,
    data_dir: DataDir = None,
    insecure: Insecure = False,
    allowed_host: AllowedHost = None,
) -> None:
    """Serve /v1/models, /v1/completions and /v1/chat/completions (any OpenAI client works against it)."""
    from ragsvc.api.model_app import create_model_app, model_keys_file
    from ragsvc.cli.server_start import bind, check_model, run
    from ragsvc.errors import RagsvcError
    from ragsvc.serving.config import EngineConfig
    from ragsvc.store.keys import read_keys_file

    if log_level is not None:
        if log_level.lower() not in LOG_LEVELS:
            raise fail(f"--log-level {log_level!r} is not one of {', '.join(LOG_LEVELS)}")
        logging.getLogger().setLevel(log_level.upper())  # the CLI's entry point configured logging already
    level = logging.getLevelName(logging.getLogger().getEffectiveLevel()).lower()
    edge = settings(data_dir, host=host, port=port, insecure=insecure or None, allowed_hosts=allowed_host)
    keys_file = model_keys_file(edge)
    _refuse_open_exposure(edge, key_count=lambda: len(read_keys_file(keys_file)),
                          where=f"on the data folder whose keys file is {keys_file}")
    try:
        keys_on = len(read_keys_file(keys_file)) > 0
    except RagsvcError as exc:
        raise fail(exc) from exc
    try:
        config = EngineConfig.from_settings(
            edge, model=model, dtype=dtype, device=device, block_size=block_size, num_kv_blocks=num_kv_blocks,
            kv_cache_bytes=None if kv_cache_mb is None else kv_cache_mb << 20, max_num_seqs=max_num_seqs,
            max_num_batched_tokens=max_num_batched_tokens, max_model_len=max_model_len,
            enable_prefix_caching=prefix_caching, cache_dir=cache_dir, num_threads=threads, weights=weights,
            speculative=speculative, num_speculative_tokens=num_speculative_tokens,
            max_prefill_tokens=max_prefill_tokens, prefill_order=prefill_order, max_wait_steps=max_wait_steps,
        )
    except ValueError as exc:
        raise fail(exc) from exc
    sock = bind(host, port)  # before the model loads (30 s and more): a port in use is found at once
    try:
        check_model(config)
    except BaseException:
        sock.close()
        raise
    base = f"http://{host}:{port}"
    typer.echo(f"starting on {base}/v1: loading {config.model}")

    def ready(served: str) -> None:
        typer.echo(model_try_lines(base, model=served, keys_on=keys_on))

    run(lambda on_load_error: create_model_app(config, settings=edge, on_ready=ready), sock,
        log_level=level if level in LOG_LEVELS else "info")


LOG_LEVELS = ("debug", "info", "warning", "error", "critical")


def model_try_lines(base: str, *, model: str, keys_on: bool) -> str:
    """The model server's ready line and a chat request that works on it as it is (see `try_lines`)."""
    auth, lines = _key_lines(f"ready on {base}/v1 (docs: {base}/docs). Try:", keys_on)
    body = json.dumps({"model": model, "messages": [{"role": "user", "content": "What is paged attention?"}],
                       "max_tokens": 64}).replace("'", "'\\''")  # a quote in a model's name, for the shell
    lines.append(f"  curl -s{auth} {base}/v1/chat/completions -H 'content-type: application/json' -d '{body}'")
    return "\n".join(lines)


def _key_lines(ready: str, keys_on: bool) -> tuple[str, list[str]]:
    """The `curl` option that sends a key from $RAGSVC_KEY when keys are on, and the ready line (plus one that
    says where the key comes from)."""
    if not keys_on:
        return "", [ready]
    return (" -H \"authorization: Bearer $RAGSVC_KEY\"",
            [ready, "  (API keys are on: set RAGSVC_KEY to one of yours; `ragsvc keys create NAME` makes one)"])
