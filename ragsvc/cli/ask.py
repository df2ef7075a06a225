"""`ragsvc ask`: answer a question over a collection, with citations, from the terminal.

The model is the OpenAI-compatible server in RAGSVC_GENERATOR__URL when set, else the local model of the
`model` settings (SmolLM2 by default), run in this process for the one question.
"""

from __future__ import annotations

import dataclasses
import json
from typing import TYPE_CHECKING, Annotated, Any, Literal

import typer

from ragsvc.cli.common import SAMPLE_COLLECTION, DataDir, FilterOption, fail, open_store, parse_filter, settings
from ragsvc.errors import RagsvcError

if TYPE_CHECKING:
    from ragsvc.answer.types import Answer

app = typer.Typer()


@app.command()
def ask(
    question: Annotated[str, typer.Argument(help="the question, in plain words")],
    collection: Annotated[str, typer.Option("--collection", "-c", help="collection to answer from")
                          ] = SAMPLE_COLLECTION,
    k: Annotated[int, typer.Option("-k", help="passages retrieved per round")] = 5,
    mode: Annotated[str, typer.Option(help="dense | lexical | hybrid")] = "hybrid",
    filter: FilterOption = None,
    flare: Annotated[bool, typer.Option("--flare", help="active retrieval: retrieve again when unsure")] = False,
    theta: Annotated[float | None, typer.Option(help="with --flare: retrieve when a token's probability is below "
                                                     "this \\[default: 0.4]")] = None,
    max_tokens: Annotated[int, typer.Option(help="answer tokens at most")] = 256,
    short: Annotated[bool, typer.Option("--short", help="the answer alone (a name, a date, yes/no), cited")] = False,
    reasoning: Annotated[bool, typer.Option("--reasoning", help="a sentence per fact, then 'So the answer is X' "
                                                                 "(with --flare: each unsure sentence is a query)")
                         ] = False,
    stream: Annotated[bool, typer.Option("--stream", help="print the answer as it is written")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="print the whole answer record as JSON")] = False,
    model: Annotated[str | None, typer.Option(help="local model: packaged alias, HF folder or .gguf \\[default: "
                                                   "RAGSVC_MODEL__MODEL or smollm2]")] = None,
    data_dir: DataDir = None,
) -> None:
    """Answer QUESTION from a collection's passages and list the sources it cites."""
    from ragsvc.answer.answerer import Answerer, AnswerEvent, AnswerOptions, check_answerable
    from ragsvc.answer.composition import Composition
    from ragsvc.answer.types import NO_PASSAGES, FlareOptions
    from ragsvc.retrieval.fuse import parse_fusion_mode
    from ragsvc.retrieval.pipeline import RetrievalOptions

    config = settings(data_dir)
    if short and reasoning:
        raise typer.BadParameter("use --short or --reasoning, not both")
    if stream and as_json:  # the streamed text would come before the JSON and make stdout unparsable
        raise typer.BadParameter("use --stream or --json, not both")
    if theta is not None and not flare:
        raise typer.BadParameter("--theta sets when FLARE retrieves again; add --flare, or leave --theta out")
    try:
        options = RetrievalOptions(mode=parse_fusion_mode(mode), k=k,
                                   filter=parse_filter(filter) if filter else None)
        flare_options = FlareOptions(max_tokens=max_tokens) if flare else None
        if flare_options is not None and theta is not None:
            flare_options = dataclasses.replace(flare_options, theta=theta)
        answer_options = AnswerOptions(max_tokens=max_tokens, style=_style(short, reasoning))
        store = open_store(data_dir)
    except (ValueError, RagsvcError) as exc:
        raise fail(exc) from exc
    composition = Composition(config, lambda: _local_generator(config, model))
    streamed = False

    def on_event(event: AnswerEvent) -> None:
        nonlocal streamed
        if stream and event.kind == "text":
            typer.echo(event.text, nl=False)
            streamed = True
        elif stream and event.kind == "retrieval" and event.retrieval is not None and event.retrieval.round > 0:
            typer.secho(f" [retrieving: {event.retrieval.query!r}]", fg=typer.colors.BLUE, err=True, nl=False)

    try:
        check_answerable(collection, store.get_collection(collection).num_chunks)
        generator = composition.require_generator()
        pipeline = composition.pipeline(store)
        pipeline.check(options)

        def retrieve(query: str) -> tuple[list[Any], dict[str, float]]:
            found = pipeline.retrieve(collection, query, options)
            return found.hits, found.timings_ms

        answer = Answerer(generator, retrieve, options=answer_options, on_event=on_event).answer(
            question, flare=flare_options)
    except RagsvcError as exc:
        raise fail(exc) from exc
    finally:
        composition.close()
        store.close()
    if as_json:
        typer.echo(json.dumps(_record(answer), indent=2))
        return
    if answer.finish_reason == NO_PASSAGES:
        typer.secho(f"no passage of {collection} matched the question{' and the filter' if filter else ''}, so "
                    "there is nothing to answer from (the model was not asked)", fg=typer.colors.YELLOW)
        return
    if streamed:
        typer.echo()
        if answer.finish_reason == "repetition":  # the stream showed the start of the loop; say what was kept
            typer.secho(f"(the model began repeating itself; the answer kept ends there:)\n{answer.text}", dim=True)
    else:
        typer.echo(answer.text)
    if answer.final is not None:
        typer.secho(f"answer: {answer.final}", bold=True)
    _print_sources(answer)


def _style(short: bool, reasoning: bool) -> Literal["full", "short", "reasoning"]:
    return "reasoning" if reasoning else "short" if short else "full"


def _local_generator(config: Any, model: str | None) -> Any:
    from ragsvc.llm.in_process import InProcessGenerator
    from ragsvc.serving.config import EngineConfig

    return InProcessGenerator.from_config(EngineConfig.from_settings(config, model=model))


def _print_sources(answer: Answer) -> None:
    cited = {c.number for c in answer.citations}
    typer.echo("\nsources:")
    for passage in answer.passages:
        mark = "*" if passage.number in cited else " "
        snippet = " ".join(passage.text.split())[:100]
        typer.echo(f" {mark}[{passage.number}] {passage.document_id}: {snippet}")
    rounds = sum(1 for r in answer.retrievals if r.round > 0)
    ended = {"length": "; stopped at the token limit", "rounds": "; FLARE's rounds ran out",
             "repetition": "; cut where the model began repeating itself"}.get(answer.finish_reason, "")
    typer.secho(f"({len(answer.retrievals)} retrieval(s), {rounds} during generation; {answer.completion_tokens} "
                f"tokens; {answer.cached_tokens}/{answer.prompt_tokens} prompt tokens from the prefix cache; "
                f"{answer.timings_ms['total_ms'] / 1000:.1f} s{ended})", dim=True)


def _record(answer: Answer) -> dict[str, Any]:
    from ragsvc.api.answer_schemas import AnswerResponse

    return AnswerResponse.of(answer).model_dump()
