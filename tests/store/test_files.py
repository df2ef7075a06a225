"""Reading files for ingest: every entry that cannot become a document is named with its reason, the rest read."""

import json
import os
import threading

import pytest

from ragsvc.errors import InvalidInput
from ragsvc.store.files import Unreadable, expand_paths, read_documents, read_entries, scan_entries


def _jsonl(path, rows):
    path.write_bytes(b"".join(r if isinstance(r, bytes) else (json.dumps(r) + "\n").encode() for r in rows))
    return path


def test_each_bad_jsonl_line_is_named_and_the_good_ones_are_read(tmp_path):
    path = _jsonl(tmp_path / "docs.jsonl", [
        {"id": "a", "text": "Tides follow the moon."},
        {"id": "b"},                                   # no text
        b"not json\n",
        b'{"id": "c", "text": "caf\xe9"}\n',            # invalid UTF-8 on one line
        {"id": "d", "text": "   "},                    # empty text
        {"id": "e", "text": "x", "metadata": [1]},     # metadata not an object
        {"id": "f" * 600, "text": "long id"},
        b"\n",                                         # blank lines are not entries
        {"text": "no id: the line names it"},
    ])
    entries = list(read_entries(path))
    bad = {e.where.rsplit(":", 1)[1]: e.reason for e in entries if isinstance(e, Unreadable)}
    good = [e for e in entries if not isinstance(e, Unreadable)]
    assert [d.id for d in good] == ["a", f"{path.as_posix()}:9"]
    assert set(bad) == {"2", "3", "4", "5", "6", "7"}
    assert "text" in bad["2"] and "invalid JSON" in bad["3"] and "not UTF-8" in bad["4"]
    assert "empty" in bad["5"] and "metadata" in bad["6"] and "1 to 512" in bad["7"]
    with pytest.raises(InvalidInput, match=r"docs.jsonl:2: each line needs"):
        list(read_documents(path))


def test_unreadable_and_non_utf8_files_and_too_long_documents(tmp_path):
    latin = tmp_path / "latin.txt"
    latin.write_bytes(b"caf\xe9 au lait")
    big = tmp_path / "big.md"
    big.write_text("word " * 500_000)  # 2.5 M characters: over the 2 M limit, under 4 bytes a character of it
    fine = tmp_path / "fine.md"
    fine.write_text("# Title\n\nBody.")
    (entry,) = read_entries(latin)
    assert isinstance(entry, Unreadable) and entry.where.endswith("latin.txt") and "not UTF-8" in entry.reason
    (entry,) = read_entries(big)
    assert isinstance(entry, Unreadable) and "2500000 characters" in entry.reason and "split" in entry.reason
    (entry,) = read_entries(fine)
    assert not isinstance(entry, Unreadable) and entry.metadata["type"] == "md"
    scan = scan_entries([latin, big, fine])
    assert scan.num_entries == 3 and scan.num_unreadable == 2 and len(scan.unreadable) == 2


@pytest.mark.parametrize("codec", ["utf-8-sig", "utf-16", "utf-16-le", "utf-16-be", "utf-32", "utf-32-be"])
def test_text_files_with_a_byte_order_mark_are_read_in_their_encoding(tmp_path, codec):
    text = "Caf\u00e9 notes \u2014 \u6f22\u5b57 and \U0001f600."
    raw = text.encode(codec)
    if codec in ("utf-16-le", "utf-16-be", "utf-32-be"):  # these codecs write no mark: put the one editors write
        raw = {"utf-16-le": b"\xff\xfe", "utf-16-be": b"\xfe\xff", "utf-32-be": b"\x00\x00\xfe\xff"}[codec] + raw
    path = tmp_path / "notes.txt"
    path.write_bytes(raw)
    (doc,) = read_entries(path)
    assert not isinstance(doc, Unreadable) and doc.text == text


def test_a_byte_order_mark_over_text_of_another_encoding_is_named(tmp_path):
    path = tmp_path / "odd.txt"
    path.write_bytes(b"\xff\xfe" + b"\x00\xd8")  # a UTF-16 mark, then a lone high surrogate
    (entry,) = read_entries(path)
    assert isinstance(entry, Unreadable) and "UTF-16 byte-order mark" in entry.reason
    latin = tmp_path / "latin.txt"
    latin.write_bytes(b"caf\xe9")
    (entry,) = read_entries(latin)
    assert isinstance(entry, Unreadable) and "byte-order mark" in entry.reason  # says what else would be read


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file whatever its mode")
def test_a_file_without_read_permission_is_named(tmp_path):
    locked = tmp_path / "locked.txt"
    locked.write_text("secret")
    locked.chmod(0)
    (entry,) = read_entries(locked)
    assert isinstance(entry, Unreadable) and "cannot read" in entry.reason


def test_a_folder_posing_as_a_file_is_named(tmp_path):
    odd = tmp_path / "odd.txt"
    odd.mkdir()
    (entry,) = read_entries(odd)
    assert isinstance(entry, Unreadable) and "cannot read the file" in entry.reason


def test_folders_are_walked_for_known_types_and_what_else_they_held_is_counted(tmp_path):
    (tmp_path / "docs" / "deep").mkdir(parents=True)
    (tmp_path / "docs" / "a.md").write_text("A")
    (tmp_path / "docs" / "deep" / "b.TXT").write_text("B")
    for name in ("x.pdf", "y.pdf", "deep/z.csv", "Makefile"):
        (tmp_path / "docs" / name).write_text("other")
    (tmp_path / "docs" / ".venv" / "lib").mkdir(parents=True)
    (tmp_path / "docs" / ".venv" / "lib" / "LICENSE.txt").write_text("not the user's")
    (tmp_path / "docs" / ".notes.md").write_text("hidden")
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "o.txt").write_text("O")
    (tmp_path / "docs" / "link").symlink_to(tmp_path / "outside")  # a symlinked folder is not entered
    found = expand_paths([str(tmp_path / "docs")])
    assert found.files == [tmp_path / "docs" / "a.md", tmp_path / "docs" / "deep" / "b.TXT"]
    assert found.other_types == {".pdf": 2, ".csv": 1, "": 1} and found.hidden == 2
    assert found.passed_over() == ("4 file(s) of other types (.pdf x2, (no suffix) x1, .csv x1); 2 hidden file(s) "
                                   "or folder(s) (names starting with '.'; name one to read it)")
    named = expand_paths([str(tmp_path / "docs" / ".notes.md"), str(tmp_path / "docs" / ".venv")])
    assert len(named.files) == 2 and named.passed_over() is None  # named outright, hidden entries are read
    with pytest.raises(InvalidInput, match="unsupported file type '.pdf'"):
        expand_paths([str(tmp_path / "docs" / "x.pdf")])


def test_a_folder_that_cannot_be_listed_is_named_not_passed_over_silently(tmp_path, monkeypatch):
    (tmp_path / "docs" / "locked").mkdir(parents=True)
    (tmp_path / "docs" / "a.md").write_text("A")
    (tmp_path / "docs" / "locked" / "b.md").write_text("B")
    real = os.scandir

    def scandir(path="."):  # as for a folder of another user's with no read permission (the tests run as root)
        if os.fspath(path).endswith("locked"):
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return real(path)

    monkeypatch.setattr(os, "scandir", scandir)
    found = expand_paths([str(tmp_path / "docs")])
    assert found.files == [tmp_path / "docs" / "a.md"]
    locked = tmp_path / "docs" / "locked"
    assert found.unreadable_folders == (f"{locked}: Permission denied",)
    assert found.passed_over() == f"1 folder(s) that could not be listed ({locked}: Permission denied)"


def test_ids_given_to_more_than_one_entry_are_counted(tmp_path):
    first = _jsonl(tmp_path / "a.jsonl", [{"id": "a", "text": "v1"}, {"id": "b", "text": "other"}, {"text": "no id"},
                                          {"text": "no id"}])  # named a.jsonl:3 and a.jsonl:4: not repeats
    second = _jsonl(tmp_path / "b.jsonl", [{"id": "a", "text": "v2"}, {"id": "a", "text": "v3"},
                                           {"id": "c", "text": "x"}, {"id": "c", "text": "y"}, b"not json\n"])
    scan = scan_entries([first, second])
    assert (scan.num_entries, scan.num_unreadable, scan.repeated_ids, scan.repeated_entries) == (9, 1, 2, 5)
    assert scan_entries([first]).repeated_ids == 0


def test_a_byte_order_mark_at_the_start_is_not_text(tmp_path):
    (tmp_path / "a.jsonl").write_bytes(b'\xef\xbb\xbf{"id": "a", "text": "first"}\r\n{"id": "b", "text": "second"}\r\n')
    (tmp_path / "b.md").write_bytes(b"\xef\xbb\xbf# Title\r\nbody\r\n")
    docs = [*read_documents(tmp_path / "a.jsonl"), *read_documents(tmp_path / "b.md")]
    assert [(d.id, d.text) for d in docs[:2]] == [("a", "first"), ("b", "second")]
    assert docs[2].text.startswith("# Title")


def test_a_line_nested_too_deeply_for_the_parser_costs_that_line_only(tmp_path):
    deep = '{"a": ' * 100_000 + "1" + "}" * 100_000
    path = tmp_path / "d.jsonl"
    path.write_text(f'{{"id": "x", "text": "t", "metadata": {deep}}}\n{{"id": "y", "text": "fine"}}\n')
    entries = list(read_entries(path))
    assert isinstance(entries[0], Unreadable) and "nested too deeply" in entries[0].reason
    assert entries[1].id == "y"


def test_a_file_far_past_the_limit_is_refused_by_its_size_without_being_read(tmp_path):
    huge = tmp_path / "huge.txt"
    with huge.open("wb") as handle:
        handle.truncate(64 << 30)  # sparse: reading it would take minutes and 64 GB of memory
    (entry,) = read_entries(huge, max_document_chars=1000)
    assert isinstance(entry, Unreadable) and entry.reason.startswith(f"file of {64 << 30} bytes; a document is at")


def test_a_jsonl_line_past_the_limit_costs_that_line_only_and_is_read_in_pieces(tmp_path):
    path = tmp_path / "long.jsonl"
    long_line = '{"id": "long", "text": "' + "x" * 6_000_000 + '"}\n'  # 6 MB on one line
    path.write_text('{"id": "a", "text": "first"}\n' + long_line + '{"id": "b", "text": "last"}')
    entries = list(read_entries(path, max_document_chars=1000))  # a line may hold 4 kB + 1 MiB of metadata
    assert [e.id for e in entries if not isinstance(e, Unreadable)] == ["a", "b"]
    (bad,) = [e for e in entries if isinstance(e, Unreadable)]
    assert bad.where.endswith("long.jsonl:2") and "line of more than 1052576 bytes" in bad.reason
    entries = list(read_entries(path))  # under the default limit the same line is read, and refused by length
    assert "6000000 characters" in next(e for e in entries if isinstance(e, Unreadable)).reason


def test_file_names_that_are_not_utf8_get_escaped_distinct_ids_and_can_be_stored(tmp_path, minilm):
    """A Latin-1 name reaches Python with lone surrogates, which no UTF-8 text (nor duckdb) can hold: the
    load once stopped there. Each bad byte is written as a \\xNN escape, so two such names stay two ids."""
    from ragsvc.retrieval.vector_store import VectorStore

    folder = tmp_path / "in"
    folder.mkdir()
    for raw in (b"caf\xe9.txt", b"caf\xe8.txt"):
        (folder / os.fsdecode(raw)).write_text(f"notes from {raw!r}")
    docs = read_documents(folder / os.fsdecode(b"caf\xe9.txt")), read_documents(folder / os.fsdecode(b"caf\xe8.txt"))
    ids = [next(iter(d)).id for d in docs]
    assert ids == [f"{folder.as_posix()}/caf\\xe9.txt", f"{folder.as_posix()}/caf\\xe8.txt"]
    files = expand_paths([str(folder)]).files
    store = VectorStore.open(tmp_path / "data", embedder=minilm)
    try:
        store.create_collection("c")
        stored = store.add_documents("c", [doc for f in files for doc in read_documents(f)])
        assert sorted(stored) == sorted(ids)
        assert store.get_document("c", ids[0])["metadata"]["path"] == ids[0]
    finally:
        store.close()



@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes are a POSIX feature")
@pytest.mark.parametrize("name", ["notes.jsonl", "notes.txt"])
def test_a_named_pipe_named_outright_is_named_not_read(tmp_path, name):
    pipe = tmp_path / name
    os.mkfifo(pipe)
    entries: list = []
    reader = threading.Thread(target=lambda: entries.extend(read_entries(pipe)), daemon=True)
    reader.start()
    reader.join(20)
    if reader.is_alive():  # blocked opening the pipe: a writer that closes at once releases it
        os.close(os.open(pipe, os.O_WRONLY | os.O_NONBLOCK))
        pytest.fail("reading blocked on a named pipe")
    (entry,) = entries
    assert isinstance(entry, Unreadable)
    assert entry.reason == ("cannot read the file (not a regular file (a named pipe); only files are read); check "
                            "it exists and is readable")


def test_a_recursive_glob_enters_no_symlinked_folder_and_lists_each_file_once(tmp_path):
    (tmp_path / "docs" / "sub").mkdir(parents=True)
    (tmp_path / "docs" / "sub" / "a.md").write_text("A")
    (tmp_path / "docs" / ".hidden").mkdir()
    (tmp_path / "docs" / ".hidden" / "h.md").write_text("H")
    (tmp_path / "docs" / ".top.md").write_text("T")
    for name in ("up1", "up2"):  # two links back up: Python's glob lists 2^depth paths for each file
        (tmp_path / "docs" / "sub" / name).symlink_to("..", target_is_directory=True)
    found: list = []
    lister = threading.Thread(target=lambda: found.append(expand_paths([f"{tmp_path}/docs/**/*.md"])), daemon=True)
    lister.start()
    lister.join(20)
    assert not lister.is_alive(), "the glob followed the symlinked folders"
    assert found[0].files == [tmp_path / "docs" / "sub" / "a.md"]
    assert expand_paths([f"{tmp_path}/docs/.*.md"]).files == [tmp_path / "docs" / ".top.md"]  # named: matched
    with pytest.raises(InvalidInput, match="use '..' only before the first wildcard"):
        expand_paths([f"{tmp_path}/docs/*/../sub/a.md"])
