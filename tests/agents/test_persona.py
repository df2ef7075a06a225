"""Personas and the town as files: the shipped village loads, and every mistake is reported as file:line."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from ragsvc.agents.persona import load_persona, load_town
from ragsvc.errors import InvalidInput

TOWN = Path(__file__).resolve().parents[2] / "agents" / "town"

GOOD = """name = "Ada Okafor"
age = 33
traits = ["curious"]
memories = ["I am the librarian."]
routine = [
    "07:00-08:00 breakfast",
    "08:00-12:00 open the library",
]
"""


def _write(tmp_path: Path, text: str, name: str = "ada.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_the_shipped_village_loads_with_its_seeded_party():
    town = load_town(TOWN)
    assert 4 <= len(town.residents) <= 6 and len(town.places) >= 3
    assert town.event is not None and town.event.host in {r.name for r in town.residents}
    assert "party" in town.event.text
    for resident in town.residents:
        assert 5 <= len(resident.routine) <= 8 and resident.memories and resident.describe().startswith(resident.name)


def test_a_good_persona_loads(tmp_path):
    persona = load_persona(_write(tmp_path, GOOD))
    assert persona.name == "Ada Okafor" and persona.age == 33
    assert [s.clock() for s in persona.routine] == ["07:00-08:00 breakfast", "08:00-12:00 open the library"]


@pytest.mark.parametrize(("text", "line", "message"), [
    (GOOD.replace('age = 33', 'age = "thirty"'), 2, "age must be"),
    (GOOD.replace('traits = ["curious"]', 'traits = "curious"'), 3, "traits must be a list"),
    (GOOD.replace('"08:00-12:00 open the library"', '"8 to 12 open the library"'), 7, "HH:MM-HH:MM"),
    (GOOD.replace('"08:00-12:00 open the library"', '"06:00-07:30 run"'), 7, "starts before"),
    (GOOD + 'mood = "happy"\n', 9, "unknown key 'mood'"),
    (GOOD.replace('name = "Ada Okafor"\n', ''), 1, "name must be"),
    (GOOD.replace('age = 33', 'age = 33 33'), 2, "not valid TOML"),
    (GOOD.replace('memories = ["I am the librarian."]', 'memories = ["I am the librarian.", 3]'), 4, "memories"),
])
def test_mistakes_name_the_file_and_line(tmp_path, text, line, message):
    path = _write(tmp_path, text)
    with pytest.raises(InvalidInput, match=message) as caught:
        load_persona(path)
    assert str(caught.value).startswith(f"{path}:{line}: ")


def test_town_mistakes_name_the_file_and_line(tmp_path):
    town = tmp_path / "town"
    shutil.copytree(TOWN, town)
    text = (town / "town.toml").read_text(encoding="utf-8")
    (town / "town.toml").write_text(text.replace('host = "Mei Tanaka"', 'host = "Nobody"'), encoding="utf-8")
    line = next(i for i, s in enumerate(text.splitlines(), start=1) if s.startswith("host ="))
    with pytest.raises(InvalidInput, match=rf"town.toml:{line}: event host 'Nobody' is not a resident"):
        load_town(town)
    (town / "town.toml").write_text(text, encoding="utf-8")
    mei = (town / "mei-tanaka.toml").read_text(encoding="utf-8")
    (town / "mei-tanaka.toml").write_text(mei.replace('home = "River Cottages"', 'home = "Mars"'), encoding="utf-8")
    with pytest.raises(InvalidInput, match=r"mei-tanaka.toml:5: home 'Mars' is not a place"):
        load_town(town)
    with pytest.raises(InvalidInput, match="cannot read"):
        load_town(tmp_path / "missing")


def test_repeated_names_bad_clock_and_non_utf8_files_are_refused(tmp_path):
    town = tmp_path / "town"
    shutil.copytree(TOWN, town)
    text = (town / "town.toml").read_text(encoding="utf-8")
    (town / "mei-copy.toml").write_text((town / "mei-tanaka.toml").read_text(encoding="utf-8")
                                        .replace('name = "Mei Tanaka"', 'name = "mei  TANAKA"'), encoding="utf-8")
    repeated = r"two residents are named 'mei  TANAKA' and 'Mei Tanaka' \(.*mei-copy.toml and "
    with pytest.raises(InvalidInput, match=repeated):
        load_town(town)
    (town / "mei-copy.toml").unlink()
    (town / "town.toml").write_text(text + '\n[[places]]\nname = "lantern cafe"\nkind = "cafe"\n', encoding="utf-8")
    with pytest.raises(InvalidInput, match="two places are named 'Lantern Cafe' and 'lantern cafe'"):
        load_town(town)
    (town / "town.toml").write_text(text.replace('start = "18:00"', 'start = "25:61"'), encoding="utf-8")
    with pytest.raises(InvalidInput, match="event start must be HH:MM, got '25:61'"):
        load_town(town)
    (town / "town.toml").write_text(text, encoding="utf-8")
    (town / "zz.toml").write_bytes(b"\xff\xfename = 1\n")
    with pytest.raises(InvalidInput, match=r"zz.toml: not UTF-8 text \(at byte offset 0\)"):
        load_town(town)
