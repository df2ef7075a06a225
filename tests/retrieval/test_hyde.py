"""HyDE: the vector is the normalised mean of the query and passage embeddings; passages differ by seed; the
cache serves a repeat without generating again; bad options are refused."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from ragsvc.errors import InvalidInput
from ragsvc.llm.scripted import ScriptedGenerator
from ragsvc.retrieval.hyde import TEMPLATES, HyDE, HydeOptions, hyde_vector


def _writer():
    """A scripted generator whose passage depends on the seed it was asked for, recording every call."""
    lock = threading.Lock()
    seeds: list[int] = []
    gen = ScriptedGenerator(lambda prompt: "placeholder")

    def generate(prompt, **kwargs):
        with lock:
            seeds.append(kwargs["seed"])
        question = prompt[0]["content"].split("\n")[1]
        return ScriptedGenerator([f"Paged attention stores keys and values in blocks ({question}, "
                                  f"draft {kwargs['seed']})."]).generate(prompt, **kwargs)

    gen.generate = generate
    return gen, seeds


def test_vector_is_the_normalised_mean_of_query_and_passages(minilm):
    gen, seeds = _writer()
    hyde = HyDE(gen, minilm)
    out = hyde.expand("how is the KV cache laid out?", HydeOptions(n=3, template="general", seed=10))
    assert sorted(seeds) == [10, 11, 12]
    assert len(set(out.passages)) == 3 and all("Question: how is the KV cache" in p for p in out.passages)
    q = minilm.embed_query("how is the KV cache laid out?")
    docs = minilm.embed_documents(list(out.passages))
    expected = (q + docs.sum(axis=0)) / 4
    expected /= np.linalg.norm(expected)
    np.testing.assert_allclose(out.vector, expected, rtol=1e-5, atol=1e-6)
    assert out.vector.dtype == np.float32 and not out.cached and out.completion_tokens > 0


def test_cache_serves_a_repeat_and_keys_on_the_options(minilm):
    gen, seeds = _writer()
    hyde = HyDE(gen, minilm, cache_size=2)
    first = hyde.expand("what is HNSW?", HydeOptions(n=2))
    again = hyde.expand("what is HNSW?", HydeOptions(n=2))
    assert again.cached and len(seeds) == 2
    np.testing.assert_array_equal(first.vector, again.vector)
    hyde.expand("what is HNSW?", HydeOptions(n=2, template="science"))  # another template: generates
    assert len(seeds) == 4
    hyde.expand("a third query", HydeOptions(n=1))  # evicts the oldest entry (size 2)
    hyde.expand("what is HNSW?", HydeOptions(n=2))
    assert len(seeds) == 7


def test_template_shapes_the_prompt(minilm):
    prompts = []
    gen = ScriptedGenerator(lambda p: prompts.append(p) or "def f(): pass")
    HyDE(gen, minilm).expand("reverse a list", HydeOptions(n=1, template="code"))
    assert prompts[0][0]["content"] == TEMPLATES["code"].format(query="reverse a list")


def test_empty_passages_fall_back_to_the_query(minilm):
    hyde = HyDE(ScriptedGenerator(lambda p: "   "), minilm)
    out = hyde.expand("vector databases", HydeOptions(n=2))
    np.testing.assert_allclose(out.vector, minilm.embed_query("vector databases"), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("bad", [dict(n=0), dict(n=17), dict(template="poetry"), dict(temperature=-1),
                                 dict(max_tokens=4)])
def test_bad_options_are_refused(bad):
    with pytest.raises(InvalidInput):
        HydeOptions(**bad)


def test_empty_query_is_refused(minilm):
    with pytest.raises(InvalidInput, match="query is empty"):
        HyDE(ScriptedGenerator([]), minilm).expand("  ")


def test_hyde_vector_of_no_passages_is_the_query():
    q = np.array([3.0, 4.0], dtype=np.float32)
    np.testing.assert_allclose(hyde_vector(q, np.zeros((0, 2), np.float32)), [0.6, 0.8])
