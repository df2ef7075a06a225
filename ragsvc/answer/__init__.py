"""Question -> answer with citations: single retrieval, or FLARE's active retrieval (uses retrieval and llm)."""
