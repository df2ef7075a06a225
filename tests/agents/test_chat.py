"""Chat with an agent over a real duckdb catalog, with scripted replies: the prompt grounds the reply in the
memories retrieved for the message (and the ids come back), history and memories are written only when a reply
is complete, the session clock, persona validation, and the registry across a reopen."""

from __future__ import annotations

import math
import re
import threading
from collections.abc import Iterator

import pytest

from ragsvc.agents.chat import (
    MAX_MESSAGE_CHARS,
    ChatOptions,
    HistoryLine,
    chat_prompt,
    check_message,
    clean_reply,
    session_clock_h,
)
from ragsvc.agents.chat_service import ChatService
from ragsvc.agents.importance import PRIMER
from ragsvc.agents.memory import RetrievalOptions
from ragsvc.agents.registry import AgentRegistry, agent_id, check_agent_id, persona_fields, persona_from_fields
from ragsvc.api.agent_schemas import AgentCreate
from ragsvc.errors import Conflict, InvalidInput, NotFound, UpstreamError
from ragsvc.llm.generator import Generation, GenerationChunk, TokenLogprob, Usage
from ragsvc.llm.scripted import ScriptedGenerator
from ragsvc.store.catalog import Catalog
from ragsvc.store.sessions import NewTurn

ADA = {"name": "Ada Okafor", "age": 33, "traits": ["curious", "precise"],
       "summary": "Ada is the librarian of Willow Creek.", "home": "River Cottages",
       "memories": ["I am the librarian at Willow Creek Library.", "My cat Pixel sleeps on the returns desk.",
                    "I am writing a history of the old mill."],
       "routine": ["08:30-12:30 open the library", "13:30-16:00 catalogue new books"]}


def _service(catalog: Catalog, embedder, tmp_path, **options) -> ChatService:
    registry = AgentRegistry(catalog.chat_tables(), catalog.memory_tables(), embedder=embedder,
                             index_root=tmp_path / "agents")
    return ChatService(registry, score_importance=False, options=ChatOptions(**options) if options else None)


def _system(prompt) -> str:
    return prompt[0]["content"]


def test_persona_fields_round_trip_and_ids():
    persona = persona_from_fields(ADA)
    assert persona.name == "Ada Okafor" and [s.clock() for s in persona.routine] == [
        "08:30-12:30 open the library", "13:30-16:00 catalogue new books"]
    assert persona_fields(persona) == ADA
    assert agent_id("Ada Okafor") == "ada-okafor" and agent_id("  Mei  Tanaka! ") == "mei-tanaka"
    assert check_agent_id("ada_2") == "ada_2"
    # accents go, letters Unicode does not decompose are spelled out, and a name in another script gives nothing
    assert [agent_id(n) for n in ("José Álvarez", "Zoë", "Łukasz Ørsted", "Straße", "李华")] == [
        "jose-alvarez", "zoe", "lukasz-orsted", "strasse", ""]


@pytest.mark.parametrize("change, needle", [
    ({"age": 0}, "age"), ({"age": "33"}, "age"), ({"name": " "}, "name"), ({"mood": "sunny"}, "unknown"),
    ({"routine": ["morning: coffee"]}, "HH:MM"), ({"routine": ["10:00-11:00 a", "09:00-10:00 b"]}, "order"),
    ({"memories": ["x"] * 201}, "at most 200"), ({"memories": ["x" * 1001]}, "at most 1000"),
    ({"traits": [3]}, "traits"),
])
def test_bad_personas_name_the_field(change, needle):
    with pytest.raises(InvalidInput, match=needle):
        persona_from_fields({**ADA, **change})


@pytest.mark.parametrize("bad", ["", "Ada", "ada okafor", "-ada", "a" * 64, "ada/../x"])
def test_agent_ids_are_checked_whole(bad):
    with pytest.raises(InvalidInput, match="a-z"):
        check_agent_id(bad)
    assert not re.fullmatch(AgentCreate.model_json_schema()["properties"]["id"]["pattern"], bad)


def _steps(count: int) -> list[str]:
    return [f"{i // 6:02d}:{i % 6 * 10:02d}-{(i + 1) // 6:02d}:{(i + 1) % 6 * 10:02d} step {i}" for i in range(count)]


def test_the_api_schema_states_the_bounds_the_registry_checks():
    """The OpenAPI document only documents these bounds (the registry enforces them): each one, at its end,
    passes the registry, and one past it is refused."""
    props = AgentCreate.model_json_schema()["properties"]
    age = props["age"]
    at_ends = [{"age": age["minimum"]}, {"age": age["maximum"]}]
    past = [{"age": age["minimum"] - 1}, {"age": age["maximum"] + 1}]
    for key in ("name", "summary", "home"):
        at_ends.append({key: "x" * props[key]["maxLength"]})
        past += [{key: "x" * (props[key]["maxLength"] + 1)}, {key: ""}]
    for key in ("traits", "memories"):
        items, count = props[key]["items"]["maxLength"], props[key]["maxItems"]
        at_ends += [{key: ["x" * items]}, {key: [f"x{i}" for i in range(count)]}]
        past += [{key: ["x" * (items + 1)]}, {key: [f"x{i}" for i in range(count + 1)]}, {key: [""]}]
    at_ends.append({"routine": _steps(props["routine"]["maxItems"])})
    past += [{"routine": _steps(props["routine"]["maxItems"] + 1)}, {"routine": [""]}]
    for change in at_ends:
        persona_from_fields({**ADA, **change})
    for change in past:
        with pytest.raises(InvalidInput):
            persona_from_fields({**ADA, **change})


def test_messages_are_bounded():
    assert check_message("  hello  ") == "hello"
    with pytest.raises(InvalidInput, match="empty"):
        check_message(" \n ")
    with pytest.raises(InvalidInput, match=f"at most {MAX_MESSAGE_CHARS}"):
        check_message("x" * (MAX_MESSAGE_CHARS + 1))


def test_session_clock_advances_with_the_wall_and_never_runs_back():
    assert session_clock_h(start_h=5.0, created_s=1000.0, now_s=1000.0 + 2 * 3600, floor_h=0.0) == 7.0
    assert session_clock_h(start_h=5.0, created_s=1000.0, now_s=1000.0 + 1800, floor_h=9.0) == 9.0
    assert session_clock_h(start_h=5.0, created_s=1000.0, now_s=900.0, floor_h=0.0) == 5.0  # wall clock stepped back


def test_prompt_orders_persona_memories_history_message_and_cuts_old_history(catalog, embedder, tmp_path):
    persona = persona_from_fields(ADA)
    registry = AgentRegistry(catalog.chat_tables(), catalog.memory_tables(), embedder=embedder, index_root=None)
    registry.create(persona)
    memories = registry.stream("ada-okafor").recent(2)
    history = [HistoryLine("user", "a" * 50), HistoryLine("agent", "b" * 50), HistoryLine("user", "c" * 50)]
    prompt = chat_prompt(persona, user="Sam", memories=memories, history=history, message="Hi?",
                         options=ChatOptions(history_chars=120))
    assert [m["role"] for m in prompt] == ["system", "assistant", "user", "user"]  # the oldest line did not fit
    assert prompt[1]["content"] == "b" * 50 and prompt[-1]["content"].endswith(")\n\nHi?")
    system = _system(prompt)
    assert system.startswith("You are Ada Okafor. Ada Okafor is 33 years old") and "talking with Sam" in system
    assert all(f"[{m.id}] {m.text}" in prompt[-1]["content"] for m in memories)
    again = chat_prompt(persona, user="Sam", memories=[], history=history, message="Hi?")
    assert again[0] == prompt[0] and again[-1]["content"].startswith("(What you remember that may matter now:\n"
                                                                      "nothing in particular)")
    assert clean_reply('Ada Okafor: "Welcome to the library."', "Ada Okafor") == "Welcome to the library."
    assert clean_reply("Ada: Hello.", "Ada Okafor") == "Hello."


def test_reply_is_grounded_in_retrieved_memories_and_the_exchange_is_remembered(catalog, embedder, tmp_path):
    chat = _service(catalog, embedder, tmp_path, memories_k=2)
    row = chat.registry.create(persona_from_fields(ADA))
    seeds = chat.registry.stream(row.name).recent(10)
    assert len(seeds) == 3 and all(m.kind == "observation" and m.importance == 5.0 for m in seeds)
    cat = next(m for m in seeds if "Pixel" in m.text)
    session = chat.create_session("ada-okafor", user="Sam")

    def reply(prompt) -> str:
        return "Pixel is asleep on the returns desk." if "Pixel" in prompt[-1]["content"] else "I do not know."

    script = ScriptedGenerator(reply)
    first = chat.send(session.id, "Where does your cat Pixel sleep?", script)
    assert first.reply == "Pixel is asleep on the returns desk."
    assert first.agent_turn.memory_ids[0] == cat.id and len(first.agent_turn.memory_ids) == 2
    assert [m.memory.id for m in first.memories] == list(first.agent_turn.memory_ids)
    chat_memory = chat.registry.stream(row.name).recent(1, kinds=["chat"])[0]
    assert chat_memory.id == first.agent_turn.observation_id == first.user_turn.observation_id
    assert chat_memory.importance is None and chat_memory.metadata == {"session": session.id, "partner": "Sam"}
    assert "Sam: Where does your cat Pixel sleep?" in chat_memory.text and "Ada Okafor: Pixel is" in chat_memory.text

    second = chat.send(session.id, "And the mill?", script)
    prompt = script.calls[1][0]
    assert [m["content"] for m in prompt[1:3]] == ["Where does your cat Pixel sleep?",
                                                   "Pixel is asleep on the returns desk."]
    assert prompt[-1]["content"].endswith("\n\nAnd the mill?") and prompt[0] == script.calls[0][0][0]
    _, turns = chat.history(session.id)
    assert [(t.seq, t.role) for t in turns] == [(1, "user"), (2, "agent"), (3, "user"), (4, "agent")]
    assert turns[3].content == second.reply and turns[2].memory_ids == ()


def test_a_looping_reply_is_stopped_and_stored_without_the_loop(catalog, embedder, tmp_path):
    chat = _service(catalog, embedder, tmp_path)
    chat.registry.create(persona_from_fields(ADA))
    session = chat.create_session("ada-okafor", user="Sam")
    kept = "Pixel sleeps on the returns desk. She likes the warm lamp there."
    loop = " ".join([kept] + ["She likes the warm lamp there."] * 30)
    words = [(" " if i else "") + w for i, w in enumerate(loop.split(" "))]
    tokens = tuple(TokenLogprob(token=w, logprob=-0.1) for w in words)
    read = []

    class Counting(ScriptedGenerator):
        def stream(self, prompt, **kwargs):
            for chunk in super().stream(prompt, **kwargs):
                read.append(chunk)
                yield chunk

    looping = Generation(text=loop, tokens=tokens, finish_reason="length",
                         usage=Usage(prompt_tokens=30, completion_tokens=len(words)))
    reply = chat.send(session.id, "Where does Pixel sleep?", Counting([looping]))
    assert reply.reply == kept and reply.finish_reason == "repetition"
    assert len(read) < len(words) // 4  # the model was stopped, not read to the end and trimmed
    _, turns = chat.history(session.id)
    assert turns[-1].content == kept
    memory = chat.registry.stream("ada-okafor").recent(1, kinds=["chat"])[0]
    assert memory.text.endswith(f"Ada Okafor: {kept}")


def test_a_model_failing_mid_reply_writes_nothing(catalog, embedder, tmp_path):
    chat = _service(catalog, embedder, tmp_path)
    chat.registry.create(persona_from_fields(ADA))
    session = chat.create_session("ada-okafor")

    class Broken(ScriptedGenerator):
        def stream(self, prompt, **kwargs) -> Iterator[GenerationChunk]:
            yield GenerationChunk(text="I think")
            raise ConnectionResetError("the model server went away")

    pieces: list[str] = []
    with pytest.raises(UpstreamError, match="went away"):
        chat.send(session.id, "Hello?", Broken([]), on_text=pieces.append)
    assert pieces == ["I think"]
    assert chat.history(session.id)[1] == []
    assert chat.registry.stream("ada-okafor").recent(5, kinds=["chat"]) == []


@pytest.mark.parametrize("crash", ["before the turns", "after the turns"])
def test_a_failure_between_the_memory_and_the_turns_commits_neither(catalog, embedder, tmp_path, crash):
    chat = _service(catalog, embedder, tmp_path, memories_k=2)
    chat.registry.create(persona_from_fields(ADA))
    session = chat.create_session("ada-okafor")
    stream = chat.registry.stream("ada-okafor")
    seeds = len(stream)
    append_exchange = chat.tables.append_exchange

    def crashing(*args, **kwargs):
        if crash == "after the turns":
            append_exchange(*args, **kwargs)
        raise OSError("disk full")

    chat.tables.append_exchange = crashing  # type: ignore[method-assign]
    with pytest.raises(OSError, match="disk full"):
        chat.send(session.id, "Is the mill haunted?", ScriptedGenerator(["Only by the miller's ghost."]))
    assert chat.history(session.id)[1] == [] and catalog.memory_tables().count("ada-okafor") == seeds
    assert len(stream) == seeds and stream.recent(5, kinds=["chat"]) == []
    recalled = stream.retrieve("mill haunted ghost", now_h=1.0, options=RetrievalOptions(k=10, mark_accessed=False))
    assert len(recalled.memories) == seeds

    chat.tables.append_exchange = append_exchange  # type: ignore[method-assign]
    said = chat.send(session.id, "Is the mill haunted?", ScriptedGenerator(["Only by the miller's ghost."]))
    _, turns = chat.history(session.id)
    assert [t.seq for t in turns] == [1, 2] and {t.observation_id for t in turns} == {said.agent_turn.observation_id}
    (memory,) = stream.recent(1, kinds=["chat"])
    assert memory.id == said.agent_turn.observation_id and len(stream) == seeds + 1


def test_messages_to_one_session_are_answered_one_after_the_other(catalog, embedder, tmp_path):
    chat = _service(catalog, embedder, tmp_path, memories_k=1)
    chat.registry.create(persona_from_fields(ADA))
    session = chat.create_session("ada-okafor")
    started = threading.Event()
    release = threading.Event()
    active = []

    def reply(prompt) -> str:
        message = prompt[-1]["content"].rsplit("\n\n", 1)[1]
        active.append(message)
        assert len(active) == 1, f"two replies of one session at once: {active}"
        started.set()
        release.wait(timeout=30)
        active.pop()
        return f"Reply to {message}"

    script = ScriptedGenerator(reply)
    first = threading.Thread(target=chat.send, args=(session.id, "one", script))
    first.start()
    assert started.wait(timeout=30)
    second = threading.Thread(target=chat.send, args=(session.id, "two", script))
    second.start()  # blocks on the session's lock while "one" is being answered
    release.set()
    first.join(timeout=30)
    second.join(timeout=30)
    _, turns = chat.history(session.id)
    assert [(t.role, t.content) for t in turns] == [("user", "one"), ("agent", "Reply to one"),
                                                    ("user", "two"), ("agent", "Reply to two")]
    assert [m["content"] for m in script.calls[1][0][1:3]] == ["one", "Reply to one"]  # "two" saw "one"'s exchange


def test_the_session_clock_starts_at_the_agents_latest_memory(catalog, embedder, tmp_path):
    now = [1_000_000.0]
    registry = AgentRegistry(catalog.chat_tables(), catalog.memory_tables(), embedder=embedder, index_root=None)
    chat = ChatService(registry, score_importance=False, wall_clock=lambda: now[0])
    registry.create(persona_from_fields(ADA))
    registry.stream("ada-okafor").add("observation", "the mill burned down", at_h=30.0, importance=8.0)
    session = chat.create_session("ada-okafor")
    assert session.start_h == 30.0
    now[0] += 2.5 * 3600
    result = chat.send(session.id, "What happened to the mill?", ScriptedGenerator(["It burned down."]))
    assert result.agent_turn.at_h == pytest.approx(32.5) and result.user_turn.at_h == pytest.approx(32.5)
    assert all(m.memory.id for m in result.memories)
    later = chat.create_session("ada-okafor")  # a second session starts where the first left the clock
    assert later.start_h == pytest.approx(32.5)


def test_registry_conflicts_not_found_and_delete(catalog, embedder, tmp_path):
    chat = _service(catalog, embedder, tmp_path)
    chat.registry.create(persona_from_fields(ADA))
    with pytest.raises(Conflict, match="already exists"):
        chat.registry.create(persona_from_fields(ADA))
    with pytest.raises(NotFound, match="POST /v1/agents"):
        chat.create_session("nobody")
    with pytest.raises(NotFound, match="session"):
        chat.send("no-such-session", "hi", ScriptedGenerator([]))
    session = chat.create_session("ada-okafor")
    chat.send(session.id, "hi", ScriptedGenerator(["Hello."]))
    chat.delete_agent("ada-okafor")
    assert chat.registry.list() == [] and catalog.memory_tables().count("ada-okafor") == 0
    with pytest.raises(NotFound):
        chat.history(session.id)
    chat.registry.create(persona_from_fields(ADA))  # the id is free again, with only its seeds
    assert catalog.memory_tables().count("ada-okafor") == 3


def test_agents_sessions_and_memories_survive_a_reopen(embedder, tmp_path):
    catalog = Catalog(tmp_path / "catalog.duckdb")
    chat = _service(catalog, embedder, tmp_path)
    chat.registry.create(persona_from_fields(ADA), agent="ada")
    session = chat.create_session("ada", user="Sam")
    said = chat.send(session.id, "Tell me about the library.", ScriptedGenerator(["I run it."]))
    chat.registry.close()
    catalog.close()

    catalog = Catalog(tmp_path / "catalog.duckdb")
    try:
        chat = _service(catalog, embedder, tmp_path)
        (row,) = chat.registry.list()
        assert row.name == "ada" and row.persona == ADA
        again, turns = chat.history(session.id)
        assert again.user == "Sam" and again.num_turns == 2
        assert [t.content for t in turns] == ["Tell me about the library.", "I run it."]
        recalled = chat.registry.stream("ada").retrieve("library", now_h=again.start_h + 1)
        assert said.agent_turn.observation_id in {m.memory.id for m in recalled.memories}
    finally:
        chat.registry.close()
        catalog.close()


def test_each_exchange_is_rated_by_the_importance_worker(catalog, embedder, tmp_path):
    registry = AgentRegistry(catalog.chat_tables(), catalog.memory_tables(), embedder=embedder, index_root=None)
    chat = ChatService(registry)  # rates importance in the background, as the API does
    registry.create(persona_from_fields(ADA))
    session = chat.create_session("ada-okafor")

    def reply(prompt):
        if prompt[-1] == {"role": "assistant", "content": PRIMER}:  # the importance prompt: 7 (p 0.9) or 3 (p 0.1)
            top = (("7", math.log(0.9)), ("3", math.log(0.1)))
            return Generation(text="7", tokens=(TokenLogprob("7", math.log(0.9), top=top),), finish_reason="stop",
                              usage=Usage(prompt_tokens=1, completion_tokens=1))
        return "The mill burned down, I am afraid."

    try:
        said = chat.send(session.id, "What happened to the mill?", ScriptedGenerator(reply))
        chat.drain(timeout_s=30)
        (memory,) = registry.stream("ada-okafor").get([said.agent_turn.observation_id])
        assert memory.kind == "chat" and memory.importance == pytest.approx(0.9 * 7 + 0.1 * 3)
    finally:
        chat.close()


def test_a_long_history_is_read_in_pages_from_its_latest_turns(catalog, embedder, tmp_path):
    chat = _service(catalog, embedder, tmp_path)
    chat.registry.create(persona_from_fields(ADA))
    session = chat.create_session("ada-okafor")
    chat.tables.append_exchange(session.id, [NewTurn("user" if i % 2 == 0 else "agent", f"turn {i + 1}", 0.0, 0.0)
                                             for i in range(25)], observation_id=None)
    assert [t.seq for t in chat.history(session.id)[1]] == list(range(1, 26))
    assert [t.seq for t in chat.history(session.id, last=10)[1]] == list(range(16, 26))
    assert [t.seq for t in chat.history(session.id, last=10, before_seq=16)[1]] == list(range(6, 16))
    assert [t.content for t in chat.history(session.id, last=10, before_seq=6)[1]] == [f"turn {i}" for i in range(1, 6)]
    assert chat.history(session.id, before_seq=1)[1] == []
