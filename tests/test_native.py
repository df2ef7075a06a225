"""ragsvc.native: kernel sources read from package data with the headers they include, and a build cache whose
key covers those headers, so editing a shared header rebuilds every kernel that includes it."""

import ctypes
import shutil

import pytest

from ragsvc import native

SOURCE = '#include "answer.h"\nextern "C" int answer() { return ANSWER; }\n'


def test_read_source_returns_the_included_headers():
    source, headers = native.read_source("ragsvc.serving.layers", "cpu_fused.cpp")
    assert '#include "cpu_prelude.h"' in source
    assert list(headers) == ["cpu_prelude.h"]
    assert "exp_nonpositive" in headers["cpu_prelude.h"]


def test_read_source_without_local_includes():
    source, headers = native.read_source("ragsvc.index", "sq8_graph_search.cpp")
    assert "sq8_hnsw_search" in source and headers == {}


@pytest.fixture
def cache(tmp_path, monkeypatch):
    if shutil.which("g++") is None:
        pytest.skip("no C++ compiler")
    monkeypatch.delenv("RAGSVC_NO_NATIVE", raising=False)
    monkeypatch.delenv("CXX", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    return native.cache_dir()


def _answer(headers: dict[str, str]) -> int:
    lib = native.load_library("answer", SOURCE, {"answer": ([], ctypes.c_int)}, headers=headers)
    assert lib is not None
    return int(lib.answer())


def test_a_header_edit_builds_a_new_library(cache):
    assert _answer({"answer.h": "#define ANSWER 41\n"}) == 41
    assert _answer({"answer.h": "#define ANSWER 42\n"}) == 42  # same source text, new header: rebuilt
    assert len(list(cache.glob("answer_*.so"))) == 2
    assert _answer({"answer.h": "#define ANSWER 41\n"}) == 41  # cached
    assert len(list(cache.glob("answer_*.so"))) == 2


def test_no_native_returns_none(cache, monkeypatch):
    monkeypatch.setenv("RAGSVC_NO_NATIVE", "1")
    assert native.load_library("answer", SOURCE, {"answer": ([], ctypes.c_int)}, headers={}) is None
    assert not cache.exists()
