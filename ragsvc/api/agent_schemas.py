"""Wire schemas of the agents and chat-session routes (ragsvc/api/routes/agents.py).

A persona is sent with the fields of an `agents/*.toml` file; its bounds and the routine's format are checked
by ragsvc.agents.registry (one place for the API and files alike, with messages that name the field), so the
schema here fixes the types and only documents those bounds (`_documented`), for clients and fuzzers that
generate requests from the OpenAPI document.
Times go out twice: the wall clock as ISO 8601 UTC, and the agent's simulation clock in hours (`*_h`).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from ragsvc.agents.chat import MAX_MESSAGE_CHARS
from ragsvc.agents.chat_service import MAX_USER_CHARS, ChatReply
from ragsvc.agents.memory import RetrievedMemory
from ragsvc.agents.registry import AGENT_ID, AGES, LIMITS
from ragsvc.api.request_body import RequestBody
from ragsvc.store.memories import MemoryRecord
from ragsvc.store.sessions import AgentRow, SessionRow, TurnRow


def iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, tz=UTC).isoformat()


def _documented(**bounds: Any) -> dict[str, Any]:
    """JSON-schema keywords for the OpenAPI document only; the registry enforces them."""
    return bounds


def _texts(count: int, chars: int) -> dict[str, Any]:
    return _documented(maxItems=count, items={"type": "string", "minLength": 1, "maxLength": chars})


class AgentCreate(RequestBody):
    id: str | None = Field(None, max_length=63, description="URL id (a-z, 0-9, '-', '_'); default: from the name",
                           json_schema_extra=_documented(pattern=f"^{AGENT_ID.pattern}$"))
    name: str = Field(max_length=LIMITS["name"], json_schema_extra=_documented(minLength=1))
    age: int = Field(json_schema_extra=_documented(minimum=AGES[0], maximum=AGES[1]))
    traits: list[str] = Field([], json_schema_extra=_texts(LIMITS["traits"], LIMITS["trait"]))
    summary: str | None = Field(None, json_schema_extra=_documented(minLength=1, maxLength=LIMITS["summary"]))
    home: str | None = Field(None, json_schema_extra=_documented(minLength=1, maxLength=LIMITS["home"]))
    memories: list[str] = Field([], description="seed memories, stored as observations",
                                json_schema_extra=_texts(LIMITS["memories"], LIMITS["memory"]))
    routine: list[str] = Field([], description="the day plan, 'HH:MM-HH:MM activity' in time order",
                               json_schema_extra=_documented(maxItems=LIMITS["routine"],
                                                             items={"type": "string", "minLength": 1}))

    def persona(self) -> dict[str, Any]:
        return self.model_dump(exclude={"id"}, exclude_none=True)


class AgentPublic(BaseModel):
    id: str
    persona: dict[str, Any]
    created_at: str
    num_memories: int

    @classmethod
    def of(cls, row: AgentRow, num_memories: int) -> AgentPublic:
        return cls(id=row.name, persona=dict(row.persona), created_at=iso(row.created_s), num_memories=num_memories)


class MemoryPublic(BaseModel):
    id: int
    kind: str
    text: str
    created_h: float
    last_accessed_h: float
    importance: float | None = Field(description="1-10; null while its scoring is pending")
    metadata: dict[str, Any]

    @classmethod
    def of(cls, m: MemoryRecord) -> MemoryPublic:
        return cls(id=m.id, kind=m.kind, text=m.text, created_h=m.created_h, last_accessed_h=m.last_accessed_h,
                   importance=m.importance, metadata=dict(m.metadata))


class SessionCreate(RequestBody):
    user: str = Field("a visitor", min_length=1, max_length=MAX_USER_CHARS,
                      description="what the agent calls you")


class SessionPublic(BaseModel):
    id: str
    agent: str
    user: str
    created_at: str
    start_h: float = Field(description="the agent's simulation clock when the session began")
    num_turns: int

    @classmethod
    def of(cls, s: SessionRow) -> SessionPublic:
        return cls(id=s.id, agent=s.agent, user=s.user, created_at=iso(s.created_s), start_h=s.start_h,
                   num_turns=s.num_turns)


class TurnPublic(BaseModel):
    seq: int
    role: Literal["user", "agent"]
    content: str
    created_at: str
    at_h: float
    memory_ids: list[int] = Field(description="memories the reply was grounded in (agent turns)")
    observation_id: int | None = Field(description="the chat memory the exchange became")

    @classmethod
    def of(cls, t: TurnRow) -> TurnPublic:
        return cls(seq=t.seq, role=t.role, content=t.content, created_at=iso(t.created_s), at_h=t.at_h,
                   memory_ids=list(t.memory_ids), observation_id=t.observation_id)


class SessionHistory(SessionPublic):
    turns: list[TurnPublic]


class MessageCreate(RequestBody):
    content: str = Field(description=f"what you say; 1-{MAX_MESSAGE_CHARS} characters",
                         json_schema_extra=_documented(minLength=1, maxLength=MAX_MESSAGE_CHARS))
    stream: bool = Field(False, description="server-sent events: memories, text..., then reply (or error)")
    max_tokens: int | None = Field(None, ge=1, le=1024, description="reply budget \\[default: 160]")


class RecalledPublic(BaseModel):
    id: int
    kind: str
    text: str
    score: float

    @classmethod
    def of(cls, r: RetrievedMemory) -> RecalledPublic:
        return cls(id=r.memory.id, kind=r.memory.kind, text=r.memory.text, score=r.score)


class UsagePublic(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int


class MessageReply(BaseModel):
    session: str
    agent: str
    reply: str
    memory_ids: list[int]
    memories: list[RecalledPublic]
    observation_id: int | None
    at_h: float
    finish_reason: str = Field(description="stop, length (max_tokens) or repetition (the model began repeating "
                                           "itself; the reply ends before the repeat)")
    usage: UsagePublic
    turns: list[TurnPublic] = Field(description="the user's turn and the agent's, as stored")

    @classmethod
    def of(cls, r: ChatReply) -> MessageReply:
        return cls(session=r.session, agent=r.agent, reply=r.reply, memory_ids=list(r.agent_turn.memory_ids),
                   memories=[RecalledPublic.of(m) for m in r.memories], observation_id=r.agent_turn.observation_id,
                   at_h=r.agent_turn.at_h, finish_reason=r.finish_reason,
                   usage=UsagePublic(prompt_tokens=r.usage.prompt_tokens, completion_tokens=r.usage.completion_tokens,
                                     cached_tokens=r.usage.cached_tokens),
                   turns=[TurnPublic.of(r.user_turn), TurnPublic.of(r.agent_turn)])
