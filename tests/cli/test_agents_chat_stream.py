"""How `ragsvc agents chat` prints a reply's server-sent events: the streamed text, then what the final `reply`
event says about how the reply ended (a pure function of the events; the live REPL is tested against a real
server in tests/api/test_agent_sessions_api.py)."""

from __future__ import annotations

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
