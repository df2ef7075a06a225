"""LLM clients behind one Generator protocol. Import the implementations from their modules:
`ragsvc.llm.in_process.InProcessGenerator`, `ragsvc.llm.openai_client.OpenAIGenerator`,
`ragsvc.llm.scripted.ScriptedGenerator` (tests)."""

from ragsvc.llm.generator import (
    GenerateOptions,
    Generation,
    GenerationChunk,
    Generator,
    Message,
    Prompt,
    TokenLogprob,
    Usage,
)

__all__ = [
    "GenerateOptions", "Generation", "GenerationChunk", "Generator", "Message", "Prompt", "TokenLogprob", "Usage",
]
