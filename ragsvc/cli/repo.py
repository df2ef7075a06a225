"""`ragsvc repo index|map|search`: index a repository into a collection, print its ranked map, search its code."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from ragsvc.cli.common import DataDir, fail, open_store, settings
from ragsvc.cli.progress import TqdmProgress
from ragsvc.errors import RagsvcError

app = typer.Typer(help="Index a code repository (tree-sitter), print its ranked map, search its code.",
                  no_args_is_help=True)

MAX_IN_MEMORY_DEFINITIONS = 3000
"""Above this a map query on an unindexed repository is not embedded on the fly."""
Collection = Annotated[str | None, typer.Option("--collection", "-c", help="\\[default: repo-<folder name>]")]


@app.command()
def index(
    path: Annotated[Path, typer.Argument(help="repository root folder")],
    collection: Collection = None,
    data_dir: DataDir = None,
    max_file_kb: Annotated[int, typer.Option(min=1, help="skip files larger than this many KiB")] = 1000,
    as_json: Annotated[bool, typer.Option("--json", help="print the report as JSON")] = False,
) -> None:
    """Index (or re-index: only changed files are parsed and embedded) a repository into a collection."""
    from ragsvc.code.indexer import RepoIndexer
    from ragsvc.code.walker import WalkConfig, resolve_root

    try:
        resolve_root(path)  # fail on a bad path before loading the embedder
        store = open_store(data_dir)
    except (RagsvcError, ValueError) as exc:
        raise fail(exc) from exc
    try:
        indexer = RepoIndexer(store, walk_config=WalkConfig(max_file_bytes=max_file_kb * 1024))
        with TqdmProgress(f"index {path}", unit="file") as progress:
            report = indexer.index(path, collection=collection, progress=progress)
    except (RagsvcError, ValueError) as exc:
        raise fail(exc) from exc
    finally:
        store.close()
    if as_json:
        typer.echo(json.dumps(report.as_dict(), indent=2))
        return
    typer.echo(f"{report.collection}: {report.num_files} files ({report.num_parsed} parsed, {report.num_unchanged} "
               f"unchanged, {report.num_removed} removed), {report.num_chunks} chunks written "
               f"in {report.seconds:.2f} s")
    for rel_path, problems in sorted(report.problems.items()):
        typer.secho(f"  {rel_path}: {'; '.join(problems)}", fg=typer.colors.YELLOW)
    if report.skipped:
        typer.echo(f"  not indexed: {skipped_summary(report.skipped)}")


def skipped_summary(skipped: dict[str, int]) -> str:
    """`3 x no parser for this file type, 1 x binary file`, most common first."""
    ranked = sorted(skipped.items(), key=lambda item: (-item[1], item[0]))
    return ", ".join(f"{count} x {reason}" for reason, count in ranked)


@app.command("map")
def map_command(
    path: Annotated[Path, typer.Argument(help="repository root folder")],
    query: Annotated[str | None, typer.Option("--query", "-q", help="rank what is relevant to this first")] = None,
    tokens: Annotated[int, typer.Option("--tokens", "-t", min=1, help="token budget of the map")] = 1024,
    collection: Collection = None,
    data_dir: DataDir = None,
) -> None:
    """Print the repository map: files -> most important definitions, fitted to the token budget.

    Uses the repository's collection when it was indexed (no parsing, query via its embeddings); otherwise
    parses the repository in memory (and embeds its definitions when a query is given)."""
    try:
        repo_map = _build_map(path, query=query, tokens=tokens, collection=collection, data_dir=data_dir)
    except (RagsvcError, ValueError) as exc:
        raise fail(exc) from exc
    if repo_map.num_definitions == 0:
        from ragsvc.code.languages import EXTENSION_LANGUAGES

        typer.secho(f"no definitions found under {path}; ragsvc parses files named "
                    f"*{', *'.join(sorted(EXTENSION_LANGUAGES))}", fg=typer.colors.YELLOW, err=True)
        return
    typer.echo(repo_map.text)
    typer.secho(f"({repo_map.num_definitions} definitions, {repo_map.num_tokens} tokens of {tokens})", err=True)


def _build_map(path: Path, *, query: str | None, tokens: int, collection: str | None, data_dir: Path | None) -> Any:
    from ragsvc.code.analysis import analyse_repository, definition_texts
    from ragsvc.code.graph import SymbolGraph
    from ragsvc.code.indexer import RepoIndexer, default_collection_name
    from ragsvc.code.manifest import load_manifest, manifest_path
    from ragsvc.code.repo_map import build_map
    from ragsvc.code.searcher import CollectionSearcher, EmbeddingSearcher
    from ragsvc.code.walker import resolve_root

    config = settings(data_dir)
    root = resolve_root(path)
    name = collection or default_collection_name(root)
    manifest = load_manifest(manifest_path(config.store.data_dir, name))
    if manifest is not None and manifest.root == str(root):  # the same name may index another folder
        store = open_store(data_dir)
        try:
            graph = RepoIndexer(store).load_graph(name)
            return build_map(graph, max_tokens=tokens, query=query,
                             searcher=CollectionSearcher(store, name) if query else None)
        finally:
            store.close()
    _, analyses, _ = analyse_repository(root)
    graph = SymbolGraph([a.tags for a in analyses])
    searcher = None
    if query:
        from ragsvc.embed.embedder import SentenceTransformerEmbedder

        definitions, texts = definition_texts(analyses)
        if len(definitions) <= MAX_IN_MEMORY_DEFINITIONS:
            searcher = EmbeddingSearcher(SentenceTransformerEmbedder(config.embed.model), definitions, texts)
        else:  # embedding tens of thousands of definitions per call would take minutes: index once instead
            typer.secho(f"{len(definitions)} definitions: ranking by names in the query only; run "
                        f"`ragsvc repo index {path}` once for meaning-based ranking", err=True)
    return build_map(graph, max_tokens=tokens, query=query, searcher=searcher)


@app.command("search")
def search_command(
    query: Annotated[str, typer.Argument(help="what the code should do")],
    collection: Annotated[str, typer.Option("--collection", "-c",
                                            help="the collection the repository was indexed into")],
    k: Annotated[int, typer.Option("-k", min=1, help="number of hits")] = 10,
    graph: Annotated[bool, typer.Option("--graph/--no-graph", help="re-rank with the symbol graph")] = True,
    language: Annotated[str | None, typer.Option(help="only this language (python, typescript, go, ...)")] = None,
    data_dir: DataDir = None,
) -> None:
    """Search an indexed repository's code: dense retrieval, re-ranked by the symbol graph."""
    from ragsvc.code.indexer import RepoIndexer
    from ragsvc.code.languages import SUPPORTED_LANGUAGES
    from ragsvc.code.search import code_search

    if language is not None and language not in SUPPORTED_LANGUAGES:
        raise fail(f"--language {language!r} is not one ragsvc indexes; use one of {', '.join(SUPPORTED_LANGUAGES)}")

    store = open_store(data_dir)
    try:
        symbol_graph = RepoIndexer(store).load_graph(collection) if graph else None
        result = code_search(store, collection, query, k=k, graph=symbol_graph,
                             filter={"language": language} if language else None)
    except (RagsvcError, ValueError) as exc:
        raise fail(exc) from exc
    finally:
        store.close()
    if not result.hits:
        where = f" in {language} files" if language else ""
        typer.secho(f"no hits{where}: the collection holds no code chunk{where}", fg=typer.colors.YELLOW, err=True)
    for rank, hit in enumerate(result.hits, start=1):
        meta = hit.metadata
        typer.echo(f"{rank:>2}. {hit.score:.4f}  {meta.get('path')}:{meta.get('start_line')}-{meta.get('end_line')}"
                   f"  {meta.get('kind')} {meta.get('symbol')}")
