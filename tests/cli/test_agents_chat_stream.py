"""How `ragsvc agents chat` prints a reply's server-sent events: the streamed text, then what the final `reply`
event says about how the reply ended (a pure function of the events; the live REPL is tested against a real
server in tests/api/test_agent_sessions_api.py), and how the REPL ends when its server goes away (a small real
HTTP server that drops the connection)."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from ragsvc.cli.agents_chat import show_stream

KEPT = "Pixel sleeps on the returns desk. She likes the lamp."


def _reply(finish_reason: str, text: str = KEPT) -> tuple[str, dict]:
    return "reply", {"reply": text, "finish_reason": finish_reason, "memory_ids": [3]}


def test_a_reply_cut_at_a_repeat_is_printed_again_as_kept(capsys):
    looping = [("memories", {"memory_ids": [3, 7]}), ("text", {"text": KEPT}),
               ("text", {"text": " She likes the lamp."}), _reply("repetition")]
    show_stream(iter(looping))
    out = capsys.readouterr().out
    assert out.startswith("(recalls 3, 7) " + KEPT + " She likes the lamp.\n")
    assert out.rstrip().endswith("ends there:)\n" + KEPT)


@pytest.mark.parametrize("finish, note", [("stop", None), ("length", "--max-tokens")])
def test_how_a_reply_ended_is_said_only_when_it_did_not_just_stop(capsys, finish, note):
    show_stream(iter([("memories", {"memory_ids": []}), ("text", {"text": KEPT}), _reply(finish)]))
    out = capsys.readouterr().out
    assert out.startswith("(recalls nothing) " + KEPT + "\n")
    assert (note in out) if note else out == "(recalls nothing) " + KEPT + "\n"


def test_an_error_event_ends_the_reply_on_stderr(capsys):
    show_stream(iter([("text", {"text": "I think"}), ("error", {"status": 502, "detail": "model went away"}),
                      _reply("stop")]))
    captured = capsys.readouterr()
    assert captured.out == "I think\n" and "502: model went away" in captured.err


class _DyingServer(BaseHTTPRequestHandler):
    """Opens a session, then drops the connection on the first message: a server that died mid-conversation.
    Also records the paths it was asked for."""

    paths: list[str] = []

    def do_POST(self) -> None:  # noqa: N802 (http.server's name)
        self.paths.append(self.path)
        self.rfile.read(int(self.headers.get("content-length", 0)))
        if self.path.endswith("/sessions"):
            body = json.dumps({"id": "s1"}).encode()
            self.send_response(201)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        else:
            self.close_connection = True  # no response at all

    def log_message(self, *args: object) -> None:
        pass


def test_a_server_lost_mid_conversation_ends_the_chat_with_a_line_not_a_traceback() -> None:
    from typer.testing import CliRunner

    from ragsvc.cli.agents import app

    server = ThreadingHTTPServer(("127.0.0.1", 0), _DyingServer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        result = CliRunner().invoke(app, ["chat", "ada/../../keys", "--url", url], input="hello\nagain\n")
    finally:
        server.shutdown()
    assert result.exit_code == 0 and result.exception is None, result.output
    assert "error: lost the server at" in result.stderr
    assert "continue it with: ragsvc agents chat ada/../../keys --session s1" in result.stdout
    # the name is one path segment, whatever it holds; one message was sent before the server was found gone
    assert _DyingServer.paths == ["/v1/agents/ada%2F..%2F..%2Fkeys/sessions", "/v1/sessions/s1/messages"]
