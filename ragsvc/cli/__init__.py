"""The `ragsvc` command: serve the API, ingest files, search, and the parts' own command groups.

One module per command group, each with its own `typer.Typer`, mounted here. Groups mounted without a name
(serve, ingest, search) put their commands at the top level (`ragsvc serve`, `ragsvc ingest`); the others are
subcommand groups (`ragsvc repo index`). This package is the only place in ragsvc that imports typer, rich or
tqdm; the command modules import everything heavy (torch, duckdb, uvicorn) inside the command bodies, so
`ragsvc --help` loads none of it.
"""

from __future__ import annotations

import logging
import os
import sys

import typer

from ragsvc.cli.agents import app as agents_app
from ragsvc.cli.ask import app as ask_app
from ragsvc.cli.bench import app as bench_app
from ragsvc.cli.bench_profile import decode_profile_command  # noqa: F401  (registers bench decode-profile)
from ragsvc.cli.collections import app as collections_app
from ragsvc.cli.eval import app as eval_app
from ragsvc.cli.help_text import unwrap_all
from ragsvc.cli.ingest import app as ingest_app
from ragsvc.cli.keys import app as keys_app
from ragsvc.cli.llm import app as llm_app
from ragsvc.cli.repo import app as repo_app
from ragsvc.cli.rerank import app as rerank_app
from ragsvc.cli.search import app as search_app
from ragsvc.cli.serve import app as serve_app

__all__ = ["app", "main"]

app = typer.Typer(help="ragsvc: a vector store, retrieval pipeline and local LLM server in one service.",
                  no_args_is_help=True, pretty_exceptions_enable=False)
app.add_typer(serve_app)
app.add_typer(ingest_app)
app.add_typer(search_app)
app.add_typer(ask_app)
app.add_typer(collections_app, name="collections")
app.add_typer(bench_app, name="bench")
app.add_typer(eval_app, name="eval")
app.add_typer(repo_app, name="repo")
app.add_typer(llm_app, name="llm")
app.add_typer(keys_app, name="keys")
app.add_typer(agents_app, name="agents")
app.add_typer(rerank_app, name="rerank")
unwrap_all(app)


QUIET_COMMANDS = frozenset({"search", "ingest", "collections", "keys", "repo"})
"""Commands that print their own results and progress: the parts' INFO lines (how the embedder loaded, which
index was built) would only bury them. Servers, benchmarks and model commands keep INFO, where those lines
are the record of what ran; RAGSVC_LOG_LEVEL sets any command's level."""


def _default_log_level(args: list[str]) -> str:
    command = next((a for a in args if not a.startswith("-")), None)
    return "WARNING" if command in QUIET_COMMANDS else "INFO"


def main() -> None:
    """The console script: process-wide defaults that must be set before torch or faiss load, then the app."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if "GOMP_SPINCOUNT" not in os.environ:  # a spin count the user chose (dedicated box) wins; see README
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads: spinning threads starve small boxes
    logging.basicConfig(level=os.environ.get("RAGSVC_LOG_LEVEL") or _default_log_level(sys.argv[1:]),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("faiss.loader").setLevel(logging.WARNING)  # it logs every CPU-variant probe at INFO
    if logging.getLogger().getEffectiveLevel() > logging.DEBUG:
        logging.getLogger("httpx").setLevel(logging.WARNING)  # a line per request drowns a load benchmark's report
    app()


if __name__ == "__main__":
    main()
