"""`ragsvc search`: search a collection by text from the terminal, as a list or as JSON."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from ragsvc.cli.common import SAMPLE_COLLECTION, DataDir, fail, open_store
from ragsvc.errors import RagsvcError

app = typer.Typer()


@app.command()
def search(
    query: Annotated[str, typer.Argument(help="text to search for")],
    collection: Annotated[str, typer.Option("--collection", "-c")] = SAMPLE_COLLECTION,
    k: Annotated[int, typer.Option("-k", help="number of hits")] = 10,
    filter: Annotated[str | None, typer.Option(help='metadata filter as JSON, e.g. \'{"type": "md"}\'')] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the raw result as JSON")] = False,
    data_dir: DataDir = None,
) -> None:
    """Search a collection by text and print the hits, best first."""
    try:
        parsed = json.loads(filter) if filter else None
        store = open_store(data_dir)
    except (json.JSONDecodeError, RagsvcError) as exc:
        raise fail(exc) from exc
    try:
        result = store.search(collection, query=query, k=k, filter=parsed)
    except RagsvcError as exc:
        raise fail(exc) from exc
    finally:
        store.close()
    if as_json:
        typer.echo(json.dumps({"hits": [_hit(h) for h in result.hits],
                               "timings_ms": result.timings_ms, "served_by": str(result.served_by)}, indent=2))
        return
    for rank, hit in enumerate(result.hits, start=1):
        snippet = " ".join(hit.text.split())[:160]
        typer.echo(f"{rank:>2}. {hit.score:.4f}  {hit.document_id}\n    {snippet}")
    typer.echo(f"({result.served_by}; {result.timings_ms.get('total_ms', 0):.1f} ms)")


def _hit(hit: Any) -> dict[str, Any]:
    return {"chunk_id": hit.chunk_id, "document_id": hit.document_id, "score": hit.score, "text": hit.text,
            "metadata": hit.metadata}
