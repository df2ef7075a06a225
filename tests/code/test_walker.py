"""The walker: ignore rules, skipped files with reasons, symlinks (loops, escapes), roots and bad paths."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from ragsvc.code.walker import MAX_IGNORE_BYTES, WalkConfig, read_source, resolve_root, walk_repository
from ragsvc.errors import InvalidInput
from ragsvc.regular_files import FileTooLarge
from tests.code.conftest import write_files


def _paths(root: Path, config: WalkConfig | None = None) -> list[str]:
    return [f.rel_path for f in walk_repository(root, config=config or WalkConfig()).files]


def test_gitignore_nested_rules_and_skip_dirs(tmp_path: Path) -> None:
    write_files(tmp_path, {
        ".gitignore": "*.gen.py\nbuild_out/\n!keep.gen.py\n",
        "src/a.py": "def a(): pass\n",
        "src/b.gen.py": "x = 1\n",
        "src/keep.gen.py": "x = 2\n",
        "src/.gitignore": "secret/\nlocal.py\n",
        "src/secret/s.py": "x = 3\n",
        "src/local.py": "x = 4\n",
        "local.py": "x = 5\n",  # the nested rule does not apply above its folder
        "build_out/c.py": "x = 6\n",
        "node_modules/lib/index.js": "function f() {}\n",
        "vendor/v.go": "package v\n",
        "README.md": "# readme\n",
    })
    assert _paths(tmp_path) == ["local.py", "src/a.py", "src/keep.gen.py"]


def test_binary_large_and_unsupported_files_are_skipped_with_reasons(tmp_path: Path) -> None:
    write_files(tmp_path, {
        "ok.py": "def ok(): pass\n",
        "blob.py": b"\x00\x01binary\x00",
        "big.py": "x = 1\n" * 1000,
        "notes.txt": "hello",
    })
    result = walk_repository(tmp_path, config=WalkConfig(max_file_bytes=1000))
    assert [f.rel_path for f in result.files] == ["ok.py"]
    reasons = {s.rel_path: s.reason for s in result.skipped}
    assert reasons["blob.py"] == "binary file"
    assert reasons["big.py"].startswith("larger than 1000 bytes")
    assert reasons["notes.txt"] == "no parser for this file type"


def test_a_name_that_is_not_utf8_is_skipped_with_its_reason(tmp_path: Path) -> None:
    """Ids are UTF-8 text and must lead back to the file, so a Latin-1 name is reported, not indexed."""
    write_files(tmp_path, {"ok.py": "def ok(): pass\n"})
    (tmp_path / os.fsdecode(b"caf\xe9.py")).write_text("def cafe(): pass\n")
    (tmp_path / os.fsdecode(b"d\xe9r")).mkdir()
    (tmp_path / os.fsdecode(b"d\xe9r") / "inner.py").write_text("x = 1\n")
    result = walk_repository(tmp_path, config=WalkConfig())
    assert [f.rel_path for f in result.files] == ["ok.py"]
    assert {s.rel_path: s.reason for s in result.skipped} == {
        "caf\\xe9.py": "its name is not UTF-8; rename it to index it",
        "d\\xe9r": "its name is not UTF-8; rename it to index it"}


def test_symlink_loop_and_escape_are_refused_but_inside_links_followed(tmp_path: Path) -> None:
    repo = write_files(tmp_path / "repo", {"pkg/mod.py": "def f(): pass\n", "other/x.py": "def x(): pass\n"})
    write_files(tmp_path / "outside", {"secret.py": "TOKEN = 1\n"})
    os.symlink(repo / "pkg", repo / "pkg" / "loop")  # pkg/loop -> pkg: a cycle
    os.symlink(tmp_path / "outside", repo / "escape")
    os.symlink(repo / "other", repo / "alias")  # a folder reached twice: walked once
    result = walk_repository(repo)
    assert [f.rel_path for f in result.files] == ["other/x.py", "pkg/mod.py"]
    reasons = {s.rel_path: s.reason for s in result.skipped}
    assert reasons["alias"].startswith("symlink loop")
    assert reasons["pkg/loop"].startswith("symlink loop")
    assert reasons["escape"] == "symlink points outside the repository"


def test_dangling_symlink_is_reported_unreadable(tmp_path: Path) -> None:
    write_files(tmp_path, {"a.py": "def a(): pass\n"})
    os.symlink(tmp_path / "gone.py", tmp_path / "dangling.py")
    result = walk_repository(tmp_path)
    assert [f.rel_path for f in result.files] == ["a.py"]
    assert {s.rel_path: s.reason for s in result.skipped}["dangling.py"].startswith(
        ("unreadable", "symlink points outside"))


def test_missing_file_not_a_folder_and_outside_roots_are_invalid_input(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="does not exist"):
        resolve_root(tmp_path / "nope")
    write_files(tmp_path, {"f.py": "x = 1\n", "allowed/r/a.py": "x = 1\n"})
    with pytest.raises(InvalidInput, match="not a folder"):
        resolve_root(tmp_path / "f.py")
    roots = (tmp_path / "allowed",)
    assert resolve_root(tmp_path / "allowed" / "r", allowed_roots=roots) == (tmp_path / "allowed" / "r").resolve()
    with pytest.raises(InvalidInput, match="outside the allowed roots"):
        walk_repository(tmp_path, config=WalkConfig(allowed_roots=roots))
    with pytest.raises(InvalidInput, match="outside the allowed roots"):  # `..` cannot climb out
        resolve_root(tmp_path / "allowed" / "r" / ".." / "..", allowed_roots=roots)


def _walk_within(repo: Path, seconds: float = 20.0):
    """The walk, run on a thread so that a read that blocks fails the test instead of hanging it; a pipe it
    blocks on is then opened for writing, which releases the read."""
    done: list = []
    worker = threading.Thread(target=lambda: done.append(walk_repository(repo)), daemon=True)
    worker.start()
    worker.join(seconds)
    if worker.is_alive():
        for pipe in repo.rglob("*"):
            if pipe.is_fifo():
                os.close(os.open(pipe, os.O_WRONLY | os.O_NONBLOCK))
        worker.join(seconds)
        pytest.fail("the walk blocked reading a named pipe")
    return done[0]


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes are a POSIX feature")
def test_a_named_pipe_with_a_source_name_is_skipped_not_read(tmp_path: Path) -> None:
    repo = write_files(tmp_path / "repo", {"a.py": "def a(): pass\n", "sub/b.py": "def b(): pass\n"})
    os.mkfifo(repo / "pipe.py")
    os.mkfifo(repo / "sub" / ".gitignore")
    result = _walk_within(repo)
    assert [f.rel_path for f in result.files] == ["a.py", "sub/b.py"]
    reasons = [(s.rel_path, s.reason) for s in result.skipped]
    assert ("pipe.py", "unreadable: not a regular file (a named pipe); only files are read") in reasons
    assert [r for r in reasons if r[0] == "sub/.gitignore"] == [
        ("sub/.gitignore", "its rules were not applied: not a regular file (a named pipe); only files are read")]


@pytest.mark.skipif(not Path("/dev/zero").exists(), reason="needs /dev/zero")
def test_a_gitignore_linked_to_a_device_or_too_large_is_not_read(tmp_path: Path) -> None:
    repo = write_files(tmp_path / "repo", {"a.py": "def a(): pass\n", "big/c.py": "def c(): pass\n"})
    os.symlink("/dev/zero", repo / ".gitignore")  # read whole, it never ends
    (repo / "big" / ".gitignore").write_text("c.py\n" + "#" * MAX_IGNORE_BYTES)
    result = _walk_within(repo)
    assert [f.rel_path for f in result.files] == ["a.py", "big/c.py"]  # no rules from either
    reasons = [(s.rel_path, s.reason) for s in result.skipped]
    assert (".gitignore", LINKED) in reasons
    assert ("big/.gitignore", f"its rules were not applied: larger than {MAX_IGNORE_BYTES} bytes") in reasons


LINKED = "its rules were not applied: it is a symlink, which git does not follow for .gitignore"


def test_a_symlinked_gitignore_is_not_applied_as_git_does_not(tmp_path: Path) -> None:
    """Linked to a file outside the repository (whose rules would otherwise decide what is indexed) or to one
    inside it, a .gitignore that is a symlink is listed, not read; a regular one beside it still applies."""
    outside = tmp_path / "outside-rules"
    outside.write_text("*.py\n")
    repo = write_files(tmp_path / "repo", {"a.py": "def a(): pass\n", "rules": "b.py\n",
                                           "sub/b.py": "def b(): pass\n", "sub/c.py": "def c(): pass\n",
                                           "other/d.py": "def d(): pass\n", "other/.gitignore": "d.py\n"})
    os.symlink(outside, repo / ".gitignore")
    os.symlink(repo / "rules", repo / "sub" / ".gitignore")
    result = _walk_within(repo)
    assert [f.rel_path for f in result.files] == ["a.py", "sub/b.py", "sub/c.py"]
    reasons = [(s.rel_path, s.reason) for s in result.skipped]
    assert (".gitignore", LINKED) in reasons and ("sub/.gitignore", LINKED) in reasons


def test_a_file_that_grew_past_the_limit_after_the_walk_is_not_read_whole(tmp_path: Path) -> None:
    repo = write_files(tmp_path / "repo", {"a.py": "def a(): pass\n"})
    [source] = walk_repository(repo, config=WalkConfig(max_file_bytes=100)).files
    assert read_source(source, max_bytes=100) == b"def a(): pass\n"
    (repo / "a.py").write_text("x = 1\n" * 100)
    with pytest.raises(FileTooLarge, match="larger than 100 bytes"):
        read_source(source, max_bytes=100)


def test_folders_nested_deeper_than_the_recursion_limit_are_walked(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    deep = repo
    for _ in range(1200):  # 2,400 characters: under PATH_MAX, nested past Python's recursion limit
        deep = deep / "d"
        deep.mkdir(parents=True)
    (deep / "x.py").write_text("def x(): pass\n")
    write_files(repo, {"a.py": "def a(): pass\n", "d/d/b.py": "def b(): pass\n"})
    try:
        result = walk_repository(repo)
    finally:  # bottom up: shutil.rmtree (pytest's clean-up of old runs) recurses once per level
        for _ in range(1200):
            for child in deep.iterdir():
                child.unlink()
            deep.rmdir()
            deep = deep.parent
    assert [f.rel_path for f in result.files] == ["a.py", "d/d/b.py"]
    [(rel, reason)] = [(s.rel_path, s.reason) for s in result.skipped]
    assert rel == "d/" * 1200 + "x.py"
    assert reason == ("its path is longer than 512 characters (a document id's limit); move it nearer the "
                      "repository's root to index it")
