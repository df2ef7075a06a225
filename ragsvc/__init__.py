"""ragsvc: a retrieval and agent orchestration service (vector store, ANN indexes, local LLM serving)."""

__version__ = "0.1.0"
