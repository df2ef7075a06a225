"""`ragsvc agents chat NAME`: talk to a registered agent through a running server's REST API.

A REPL: each line you type is posted to the session as a message with `stream: true`, and the reply is printed
as its server-sent events arrive (the memories it recalled first, as ids, then the text). `--session ID`
continues a session (its history is shown first); without it a new session is started and its id printed, so
the conversation can be picked up later. `/quit` or end of input (Ctrl-D) leaves; the session stays on the
server. Talks HTTP only, so it works against `ragsvc serve --with-model` or any deployment of the API.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Annotated, Any
from urllib.parse import quote

import typer

DEFAULT_URL = "http://127.0.0.1:8000"
QUIT = ("/quit", "/exit")


def register(app: typer.Typer) -> None:
    """Add the `chat` command to the `agents` command group."""
    app.command("chat")(chat)


def chat(
    name: Annotated[str, typer.Argument(help="the agent's id (GET /v1/agents lists them)")],
    url: Annotated[str, typer.Option(help="the ragsvc server")] = DEFAULT_URL,
    session: Annotated[str | None, typer.Option(help="continue this session instead of starting one")] = None,
    user: Annotated[str, typer.Option(help="what the agent calls you (new sessions)")] = "a visitor",
    max_tokens: Annotated[int | None, typer.Option(help="reply budget in tokens \\[default: the server's]")] = None,
    api_key: Annotated[str | None, typer.Option(envvar="RAGSVC_API_KEY", help="bearer key, if the server needs one")
                       ] = None,
) -> None:
    """Chat with an agent over the REST API (replies stream as they are written)."""
    import httpx

    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    with httpx.Client(base_url=url.rstrip("/"), timeout=httpx.Timeout(10.0, read=600.0), headers=headers) as client:
        session_id = _open(client, name, session, user)
        typer.echo("type a message; /quit to leave")
        while True:
            try:
                line = input("you> ").strip()
            except (EOFError, KeyboardInterrupt):
                typer.echo()
                break
            if line in QUIT:
                break
            if not line:
                continue
            try:
                _say(client, session_id, line, name, max_tokens)
            except KeyboardInterrupt:  # Ctrl-C stops a long reply, not the conversation
                typer.secho("\n(reply stopped)", dim=True)
            except httpx.TransportError as exc:
                typer.echo()
                typer.secho(f"error: lost the server at {client.base_url} ({exc})", fg="red", err=True)
                break
    typer.echo(f"session {session_id} kept; continue it with: ragsvc agents chat {name} --session {session_id}")


def _fail(message: str) -> typer.Exit:
    typer.secho(f"error: {message}", fg="red", err=True)
    return typer.Exit(2)


def _check(response: Any) -> Any:
    if response.status_code >= 400:
        try:
            detail = response.json().get("detail", response.text)
        except ValueError:
            detail = response.text
        raise _fail(f"{response.status_code}: {detail}")
    return response.json()


def _open(client: Any, name: str, session: str | None, user: str) -> str:
    import httpx

    try:
        if session is None:
            created = _check(client.post(f"/v1/agents/{quote(name, safe='')}/sessions", json={"user": user}))
            typer.echo(f"session {created['id']} with {name}")
            return str(created["id"])
        history = _check(client.get(f"/v1/sessions/{quote(session, safe='')}"))
    except httpx.TransportError as exc:
        raise _fail(f"cannot reach {client.base_url} ({exc}); start the server with `ragsvc serve --with-model` "
                    "or pass --url") from exc
    if history["agent"] != name:
        raise _fail(f"session {session} is with {history['agent']!r}, not {name!r}")
    for turn in history["turns"]:
        typer.echo(f"{'you' if turn['role'] == 'user' else name}> {turn['content']}")
    return session


def _say(client: Any, session_id: str, content: str, name: str, max_tokens: int | None) -> None:
    body: dict[str, Any] = {"content": content, "stream": True}
    session_id = quote(session_id, safe="")
    if max_tokens is not None:
        body["max_tokens"] = max_tokens
    with client.stream("POST", f"/v1/sessions/{session_id}/messages", json=body) as response:
        if response.status_code >= 400:
            response.read()
            _report(response)
            return
        typer.echo(f"{name}> ", nl=False)
        show_stream(_events(response.iter_lines()))


def show_stream(events: Iterator[tuple[str, Any]]) -> None:
    """Print a reply's events as they arrive. The text streamed is what the model wrote; when the server cut it
    at a repeat, the final `reply` event holds what was kept (and stored), so that is printed again."""
    for kind, data in events:
        if kind == "memories":
            typer.secho(f"(recalls {', '.join(str(i) for i in data['memory_ids']) or 'nothing'}) ", dim=True,
                        nl=False)
        elif kind == "text":
            typer.echo(data["text"], nl=False)
        elif kind == "reply":
            typer.echo()
            ended = data.get("finish_reason")
            if ended == "repetition":
                typer.secho(f"(the agent began repeating itself; the reply kept ends there:)\n{data['reply']}",
                            dim=True)
            elif ended == "length":
                typer.secho("(stopped at the token limit; --max-tokens gives longer replies)", dim=True)
            return
        elif kind == "error":
            typer.echo()
            typer.secho(f"error: {data['status']}: {data['detail']}", fg="red", err=True)
            return
    typer.echo()


def _report(response: Any) -> None:
    try:
        detail = response.json().get("detail", response.text)
    except ValueError:
        detail = response.text
    typer.secho(f"error: {response.status_code}: {detail}", fg="red", err=True)


def _events(lines: Iterator[str]) -> Iterator[tuple[str, Any]]:
    """(event, data) pairs of a server-sent event stream."""
    kind = "message"
    for line in lines:
        if line.startswith("event: "):
            kind = line[len("event: "):]
        elif line.startswith("data: "):
            yield kind, json.loads(line[len("data: "):])
