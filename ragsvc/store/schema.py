"""The catalog's tables. duckdb is the source of truth; every ANN index is derived from `chunks.vector`."""

from __future__ import annotations

SCHEMA_VERSION = 1

# Chunk ids come from one global sequence so they only ever grow: an index's watermark (the highest id it
# covers) is then enough to know which chunks it must replay after a crash.
DDL = """
CREATE TABLE IF NOT EXISTS meta (key VARCHAR PRIMARY KEY, value VARCHAR);
CREATE SEQUENCE IF NOT EXISTS chunk_ids START 1;
CREATE TABLE IF NOT EXISTS collections (
    name VARCHAR PRIMARY KEY,
    embedder_id VARCHAR NOT NULL,
    dim INTEGER NOT NULL,
    index_spec JSON NOT NULL,
    chunk_tokens INTEGER NOT NULL,
    chunk_overlap INTEGER NOT NULL,
    created_at TIMESTAMP DEFAULT current_timestamp
);
CREATE TABLE IF NOT EXISTS documents (
    collection VARCHAR NOT NULL,
    id VARCHAR NOT NULL,
    source VARCHAR,
    content_hash VARCHAR NOT NULL,
    metadata JSON NOT NULL,
    text VARCHAR NOT NULL,
    created_at TIMESTAMP DEFAULT current_timestamp,
    PRIMARY KEY (collection, id)
);
CREATE TABLE IF NOT EXISTS chunks (
    id BIGINT PRIMARY KEY,
    collection VARCHAR NOT NULL,
    document_id VARCHAR NOT NULL,
    ordinal INTEGER NOT NULL,
    text VARCHAR NOT NULL,
    start_char INTEGER NOT NULL,
    end_char INTEGER NOT NULL,
    metadata JSON NOT NULL,
    vector FLOAT[] NOT NULL
);
CREATE INDEX IF NOT EXISTS chunks_by_document ON chunks (collection, document_id);
CREATE TABLE IF NOT EXISTS embedding_cache (
    embedder_id VARCHAR NOT NULL,
    text_hash VARCHAR NOT NULL,
    vector FLOAT[] NOT NULL,
    PRIMARY KEY (embedder_id, text_hash)
);
-- vectors of chunks under another embedder (rerankers), see store/vector_cache.py; rows go with their chunks
CREATE TABLE IF NOT EXISTS chunk_vector_cache (
    embedder_id VARCHAR NOT NULL,
    chunk_id BIGINT NOT NULL,
    text_hash VARCHAR NOT NULL,
    vector FLOAT[] NOT NULL,
    PRIMARY KEY (embedder_id, chunk_id)
);
-- agents' memory streams, see store/memories.py. Memory ids come from their own ever-growing sequence, like
-- chunk ids, so each agent's derived vector index can replay above its watermark. Times are simulation hours.
-- Vectors sit in their own append-only table: the scalar columns of agent_memories are updated (importance
-- when it is scored, last_accessed on retrieval) and duckdb rewrites less when no list column is beside them.
CREATE SEQUENCE IF NOT EXISTS memory_ids START 1;
CREATE TABLE IF NOT EXISTS agent_memories (
    id BIGINT PRIMARY KEY,
    agent VARCHAR NOT NULL,
    kind VARCHAR NOT NULL,
    text VARCHAR NOT NULL,
    created_h DOUBLE NOT NULL,
    last_accessed_h DOUBLE NOT NULL,
    importance DOUBLE,
    evidence BIGINT[] NOT NULL,
    metadata JSON NOT NULL
);
CREATE TABLE IF NOT EXISTS agent_memory_vectors (
    memory_id BIGINT PRIMARY KEY,
    agent VARCHAR NOT NULL,
    vector FLOAT[] NOT NULL
);
-- API keys, see store/keys.py: the secret's SHA-256 only; revoked keys stay listed (revoked_at set)
CREATE TABLE IF NOT EXISTS api_keys (
    id VARCHAR PRIMARY KEY,
    name VARCHAR NOT NULL,
    secret_sha256 VARCHAR NOT NULL,
    scopes VARCHAR[] NOT NULL,
    collections VARCHAR[] NOT NULL,
    created_at DOUBLE NOT NULL,
    revoked_at DOUBLE
);
-- chat with agents, see store/sessions.py: the agents registry (a persona as JSON), sessions and their turns.
-- Wall times are Unix seconds; at_h is the agent's simulation clock when the turn was said. A turn's memory_ids
-- are the memories its reply was grounded in; observation_id the chat memory the exchange became.
CREATE TABLE IF NOT EXISTS chat_agents (
    name VARCHAR PRIMARY KEY,
    persona JSON NOT NULL,
    created_s DOUBLE NOT NULL
);
CREATE TABLE IF NOT EXISTS chat_sessions (
    id VARCHAR PRIMARY KEY,
    agent VARCHAR NOT NULL,
    user_name VARCHAR NOT NULL,
    created_s DOUBLE NOT NULL,
    start_h DOUBLE NOT NULL
);
CREATE TABLE IF NOT EXISTS chat_turns (
    session_id VARCHAR NOT NULL,
    seq INTEGER NOT NULL,
    role VARCHAR NOT NULL,
    content VARCHAR NOT NULL,
    created_s DOUBLE NOT NULL,
    at_h DOUBLE NOT NULL,
    memory_ids BIGINT[] NOT NULL,
    observation_id BIGINT,
    PRIMARY KEY (session_id, seq)
);
-- generative-agent simulation runs, see store/simulation.py: a data folder holds one run (its identity in
-- sim_run), and each committed tick its agents' state, its trace and its transcript rows. A tick's rows commit
-- in the same transaction as the memories it wrote, so a killed run resumes after its last whole tick.
CREATE TABLE IF NOT EXISTS sim_run (
    key VARCHAR PRIMARY KEY,
    town VARCHAR NOT NULL,
    fingerprint VARCHAR NOT NULL,
    config JSON NOT NULL
);
CREATE TABLE IF NOT EXISTS sim_ticks (
    tick INTEGER PRIMARY KEY,
    time_h DOUBLE NOT NULL,
    state JSON NOT NULL,
    trace JSON NOT NULL
);
CREATE TABLE IF NOT EXISTS sim_transcript (
    tick INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    row JSON NOT NULL,
    PRIMARY KEY (tick, seq)
);
"""
