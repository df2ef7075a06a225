"""The tick's later phases: conversations, reflection and importance ratings, each batched across agents.

Conversations. Pairs form among residents at one place: an agent who decided to react talks to the one its
reaction names (or the first there), and otherwise two residents talk with the seeded chance
`chat_probability`, at most once per `chat_cooldown_min`. All conversations of a tick advance together: turn t
of every pair is one generate_many, each speaker conditioned on what it retrieves about the other (the same
prompt agents/dialogue.py uses). Afterwards both sides remember the conversation as a chat memory. When an
utterance names the seeded event (its keyword, e.g. "party") to a listener who did not know of it, the
transcript gets a `learned_event` row for the listener: who learned of it, from whom, when.

Reflection (agents/reflection.py's prompts and parsers): agents whose importance since their last reflection
reaches the threshold ask their questions in one batch, then all agents' questions get their insights in one
more. Importance: every pending memory of every agent is rated in one batch (the scorer's instruction comes
first, so it is a prefix all of them share).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from ragsvc.agents.dialogue import END, Speaker, Utterance, chat_memory, clean_line, on_mind, repeats, utterance_prompt
from ragsvc.agents.importance import ImportanceScorer
from ragsvc.agents.reflection import insights_prompt, parse_questions, questions_prompt, read_insights, tree_depth
from ragsvc.agents.sim_calls import PhaseGenerator
from ragsvc.agents.sim_tick import Tick
from ragsvc.store.memories import MemoryRecord

UTTERANCE_TOKENS = 48
TURN_MEMORIES = 4
REFLECTION_TOKENS = 128
RECENT_FOR_REFLECTION = 50
EVIDENCE_PER_QUESTION = 8
CHAT_CHARS = 1200
COUNTED_KINDS = ("observation", "chat")


@dataclass(slots=True)
class Conversation:
    a: str
    b: str
    said: list[Utterance] = field(default_factory=list)
    done: bool = False
    about: dict[str, list[MemoryRecord]] = field(default_factory=dict)
    """What each side recalled about the other when the conversation began (kept for every turn)."""


def pick_pairs(t: Tick, company: Mapping[str, list[str]], reacted: Mapping[str, str]) -> list[Conversation]:
    """Who talks this tick (each agent in at most one conversation), in name order, seeded."""
    busy: set[str] = set()
    pairs: list[Conversation] = []
    cooldown_h = t.world.config.chat_cooldown_min / 60.0
    for a in t.names:
        if a in busy:
            continue
        free = [b for b in company[a] if b not in busy
                and t.time_h - t.states[a].last_chat_h.get(b, -1e9) >= cooldown_h]
        if not free:
            continue
        if a in reacted:
            named = [b for b in free if b.split()[0].lower() in reacted[a].lower()]
            partner = (named or free)[0]
        elif t.rng.random() < t.world.config.chat_probability:
            partner = t.rng.choice(free)
        else:
            continue
        busy.update((a, partner))
        pairs.append(Conversation(a, partner))
    return pairs


def converse_phase(t: Tick, company: Mapping[str, list[str]], reacted: Mapping[str, str]) -> None:
    pairs = [opener_first(t, c, reacted) for c in pick_pairs(t, company, reacted)]
    for turn in range(t.world.config.max_dialogue_turns):
        active = [c for c in pairs if not c.done]
        if not active:
            break
        requests, recalled = [], []
        for c in active:
            speaker, other = (c.a, c.b) if turn % 2 == 0 else (c.b, c.a)
            memories = turn_memories(t, c, speaker, other)
            recalled.append(tuple(m.id for m in memories))
            me = Speaker(speaker, t.world.personas[speaker].describe(), t.world.streams[speaker])
            requests.append((speaker, t.prompt(speaker, utterance_prompt(me, other, memories, c.said))))
        replies = t.caller.call("dialogue", requests, max_tokens=UTTERANCE_TOKENS)
        for c, (speaker, _), ids, reply in zip(active, requests, recalled, replies, strict=True):
            line = clean_line(reply.text.replace(END, ""), speaker) if reply is not None else ""
            repeated = repeats(line, c.said)  # a small model's echo: the conversation is over
            if line and not repeated:
                c.said.append(Utterance(speaker, line, ids))
            c.done = reply is None or not line or repeated or END in reply.text
    for c in pairs:
        _finish(t, c)


def opener_first(t: Tick, c: Conversation, reacted: Mapping[str, str]) -> Conversation:
    """The pair with its opener first: one who decided to talk opens; otherwise the side with more on its mind
    (the more important memory recalled about the other, `on_mind`), the name order deciding ties. A small
    model brings up what is on its mind in an opening line, and echoes the other side in a reply."""
    for me, other in ((c.a, c.b), (c.b, c.a)):
        c.about[me] = t.recall(me, other, k=TURN_MEMORIES)
    if c.a in reacted:
        return c

    def weight(agent: str) -> float:
        focus = on_mind(c.about[agent])
        return focus.importance or 0.0 if focus is not None else 0.0

    return Conversation(c.b, c.a, about=c.about) if weight(c.b) > weight(c.a) else c


def turn_memories(t: Tick, c: Conversation, speaker: str, other: str) -> list[MemoryRecord]:
    """What the speaker recalls about the other (once per conversation), then about the last line said: the
    first keeps what matters between the two (the party a host means to mention) in every turn's prompt, where
    a query made of the last line alone ("I'm so glad you're here") would recall other things."""
    if speaker not in c.about:
        c.about[speaker] = t.recall(speaker, other, k=TURN_MEMORIES)
    if not c.said:
        return c.about[speaker]
    latest = t.recall(speaker, f"{other} {c.said[-1].text}", k=TURN_MEMORIES)
    kept = {m.id for m in c.about[speaker]}
    return c.about[speaker] + [m for m in latest if m.id not in kept][: max(TURN_MEMORIES - 2, 1)]


def _finish(t: Tick, c: Conversation) -> None:
    """Store the conversation on both sides, write its rows, and note who learned of the event from it."""
    for me, partner in ((c.a, c.b), (c.b, c.a)):
        t.states[me].last_chat_h[partner] = t.time_h
    if not c.said:
        return
    chat_ids = {}
    for me, partner in ((c.a, c.b), (c.b, c.a)):
        memory = t.world.streams[me].add("chat", chat_memory(partner, c.said, limit=CHAT_CHARS), at_h=t.time_h,
                                         metadata={"partner": partner, "turns": len(c.said)})
        chat_ids[me] = memory.id
    keyword = t.world.keyword.lower()
    for u in c.said:
        listener = c.b if u.speaker == c.a else c.a
        t.row(u.speaker, "say", utterance=u.text, partner=listener, memory_ids=u.recalled)
        if keyword in u.text.lower() and not t.states[listener].knows_event:
            t.states[listener].knows_event = True
            t.row(listener, "learned_event", utterance=u.text, partner=u.speaker, memory_ids=[chat_ids[listener]])


def reflect_phase(t: Tick) -> None:
    config = t.world.config
    due = []
    for a in t.names:
        tables, state = t.world.streams[a].tables, t.states[a]
        after = max(state.reflected_through, tables.last_id(a, kind="reflection"))
        total, _pending = tables.importance_since(a, after_id=after, kinds=COUNTED_KINDS)
        if total >= config.reflection_threshold:
            due.append(a)
    recent = {a: t.world.streams[a].recent(RECENT_FOR_REFLECTION) for a in due}
    for a in due:
        t.states[a].reflected_through = max((m.id for m in recent[a]), default=0)
    requests = [(a, t.prompt(a, questions_prompt(a, recent[a], num_questions=config.reflection_questions)))
                for a in due if recent[a]]
    asked = []
    for (a, _), reply in zip(requests, t.caller.call("questions", requests, max_tokens=REFLECTION_TOKENS),
                             strict=True):
        for q in parse_questions(reply.text, limit=config.reflection_questions, agent=a) if reply is not None else []:
            asked.append((a, q, t.recall(a, q, k=EVIDENCE_PER_QUESTION)))
    prompts = [(a, t.prompt(a, insights_prompt(a, q, ev, max_insights=config.reflection_insights)))
               for a, q, ev in asked if ev]
    asked = [x for x in asked if x[2]]
    for (a, question, evidence), reply in zip(asked, t.caller.call("insights", prompts, max_tokens=REFLECTION_TOKENS),
                                              strict=True):
        if reply is None:
            continue
        by_id = {r.id: r for r in evidence}
        stream = t.world.streams[a]
        for insight in read_insights(reply.text, evidence, stream.embedder, limit=config.reflection_insights):
            depth = tree_depth([by_id[i] for i in insight.evidence])
            stream.add("reflection", insight.text, at_h=t.time_h, evidence=insight.evidence,
                       metadata={"question": question, "depth": depth, "evidence_by": insight.evidence_by})
            t.row(a, "reflect", utterance=insight.text, memory_ids=insight.evidence)


def importance_phase(t: Tick) -> None:
    """Rate pending memories of the run's agents (oldest first, up to max_rated_per_tick) in one batch."""
    tables = next(iter(t.world.streams.values())).tables
    pending = [m for m in tables.pending(limit=t.world.config.max_rated_per_tick) if m.agent in t.world.streams]
    if not pending:
        return
    scorer = ImportanceScorer(PhaseGenerator(t.caller, "importance"))
    scores = scorer.score_many([m.text for m in pending])
    for a in t.names:
        mine = [(m.id, min(10.0, max(1.0, s.expected))) for m, s in zip(pending, scores, strict=True) if m.agent == a]
        if mine:
            t.world.streams[a].set_importance([i for i, _ in mine], [v for _, v in mine])
