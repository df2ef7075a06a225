"""What every command group shares: the `--data-dir` option, settings read once per command, the store opened
from them, and the one way a command reports a user error (red `error: ...` on stderr, exit code 2).

Settings are read here, at the edge, and handed down as objects; nothing below the CLI reads the environment.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:  # the real imports stay in the functions: `ragsvc --help` must not load pydantic or duckdb
    from ragsvc.config import Settings
    from ragsvc.retrieval.vector_store import VectorStore

DataDir = Annotated[Path | None, typer.Option(
    "--data-dir", help="catalog + indexes folder \\[default: indexes/data, or RAGSVC_STORE__DATA_DIR]")]
"""Help texts write `\\[default: ...]` where the default is computed at run time: typer renders help with rich
markup, which would swallow an unescaped `[default: ...]` as a style tag."""
SAMPLE_COLLECTION = "sample"
"""The collection `serve --sample` and `quickstart` fill with the bundled corpus, and `search` defaults to."""
EXIT_USAGE = 2


def settings(data_dir: Path | None = None, **api: Any) -> Settings:
    """The settings from the environment, with this command's `--data-dir` and API flags (None = unset) on top."""
    from pydantic import ValidationError

    from ragsvc.config import ApiSettings, Settings

    try:
        base = Settings()
        updates: dict[str, Any] = {}
        if data_dir is not None:
            updates["store"] = base.store.model_copy(update={"data_dir": data_dir})
        given = {k: v for k, v in api.items() if v is not None}
        if given:
            updates["api"] = ApiSettings(**{**base.api.model_dump(), **given})
        return base.model_copy(update=updates)
    except ValidationError as exc:  # a flag or RAGSVC_* value out of range: one line, not pydantic's traceback
        raise fail(_describe_settings_error(exc, section="api" if exc.title == "ApiSettings" else None)) from exc


def _describe_settings_error(exc: Any, *, section: str | None) -> str:
    """The first problem of a settings ValidationError, naming the flag (API flags) and the variable to fix."""
    err = exc.errors()[0]
    loc = [str(part) for part in err.get("loc", ())]
    path = [section, *loc] if section else loc
    variable = "RAGSVC_" + "__".join(part.upper() for part in path)
    name = _FLAG_NAMES.get(loc[-1], "--" + loc[-1].replace("_", "-"))
    flag = f"the {name} option or " if section else ""
    message = str(err.get("msg", "invalid")).removeprefix("Value error, ")  # pydantic's prefix for our own checks
    return f"{'.'.join(path)}: {message} (got {err.get('input')!r}); fix {flag}{variable}"


_FLAG_NAMES = {"allowed_hosts": "--allowed-host"}
"""API settings whose flag is not the field's name with dashes (a repeatable flag is named in the singular)."""


def open_store(data_dir: Path | None) -> VectorStore:
    """The store under `--data-dir` (or the configured folder), with the configured embedder."""
    from ragsvc.embed.embedder import embedder_from_settings
    from ragsvc.errors import RagsvcError
    from ragsvc.index.spec import IndexLimits
    from ragsvc.retrieval.vector_store import VectorStore
    from ragsvc.retrieval.write_limits import WriteLimits
    from ragsvc.store.filters import FilterLimits

    config = settings(data_dir)
    try:  # a folder that cannot be one, a catalog another process holds: one line and exit 2, in every command
        # the same embedder `serve` builds (prefixes, precision, batching), made only when a command first embeds
        return VectorStore.open(config.store.data_dir, embedder_factory=lambda: embedder_from_settings(config.embed),
                                save_interval_s=config.store.save_interval_s,
                                index_limits=IndexLimits.from_settings(config.index_limits),
                                filter_limits=FilterLimits.from_settings(config.store),
                                write_limits=WriteLimits.from_settings(config.store))
    except RagsvcError as exc:
        raise fail(exc) from exc


def fail(exc: Exception | str) -> typer.Exit:
    """Print `error: <what went wrong and what to do>` in red on stderr; raise the returned Exit (code 2)."""
    typer.secho(f"error: {cli_text(exc)}", fg=typer.colors.RED, err=True)
    return typer.Exit(code=EXIT_USAGE)


def cli_text(exc: Exception | str) -> str:
    """An error as a terminal should say it: a ragsvc error's `cli_message` when it has one (the fix as a
    command, where the API's message names an HTTP request), else the error's own text."""
    from ragsvc.errors import CollectionNotFound, RagsvcError

    if isinstance(exc, CollectionNotFound) and exc.collection == SAMPLE_COLLECTION and exc.cli_message:
        return f"{exc.cli_message}; `ragsvc quickstart` or `ragsvc serve --sample` loads the bundled sample into it"
    if isinstance(exc, RagsvcError) and exc.cli_message:
        return exc.cli_message
    return str(exc)


FilterOption = Annotated[str | None, typer.Option(
    "--filter", help='metadata filter as JSON, e.g. \'{"type": "md"}\' or \'{"year": {"$gte": 2020}}\'')]


def parse_filter(text: str) -> Any:
    """A --filter option's JSON; ValueError naming the option when it is not JSON."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"--filter is not JSON ({exc.msg} at character {exc.pos + 1}); send e.g. "
                         "'{\"type\": \"md\"}' or '{\"year\": {\"$gte\": 2020}}'") from exc
    except RecursionError as exc:
        raise ValueError("--filter is nested too deeply to read") from exc


def checked_out(path: Path | None) -> Path | None:
    """A `--json` / `--out` option's check, run as the command line is parsed: a benchmark that runs for minutes
    must not find at the end that it cannot write its result. Nothing is created here; the write makes the
    missing folders."""
    if path is None:
        return None
    if path.is_dir():
        raise typer.BadParameter(f"{path} is a folder; give the path of a file (in it, say)")
    existing = path.parent
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise typer.BadParameter(f"{existing} is a file, so {path} cannot be made; pick another path")
    if not os.access(existing, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise typer.BadParameter(f"{path} cannot be written (permission denied); pick another path")
    return path
