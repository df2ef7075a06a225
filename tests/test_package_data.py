"""Every C++ source under ragsvc/ ships in the wheel: the kernels are compiled on first use from package data,
so a .cpp or .h that pyproject's package-data globs miss works in an editable checkout and breaks an install.

The globs are matched one path segment at a time with fnmatch, as setuptools' glob does (fnmatch alone lets
`*` cross a `/`, so `index/*.cpp` would seem to cover `index/sub/x.cpp` when setuptools would skip it).
"""

import tomllib
from fnmatch import fnmatch
from pathlib import Path, PurePosixPath

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "ragsvc"
SOURCES = sorted(p for suffix in ("*.cpp", "*.h") for p in PACKAGE.rglob(suffix))


def _package_data() -> dict[str, list[str]]:
    with open(ROOT / "pyproject.toml", "rb") as f:
        return tomllib.load(f)["tool"]["setuptools"]["package-data"]


def _glob_matches(path: PurePosixPath, pattern: str) -> bool:
    parts = pattern.split("/")
    return len(parts) == len(path.parts) and all(fnmatch(p, q) for p, q in zip(path.parts, parts, strict=True))


def _package_dirs(key: str, source: Path) -> list[Path]:
    """The folders a package-data key applies to: its package's, or for "*" every package above `source`."""
    if key == "*":
        return [p for p in source.parents if p.is_relative_to(PACKAGE)]
    return [ROOT.joinpath(*key.split("."))]


def _shipped(source: Path, package_data: dict[str, list[str]]) -> bool:
    """Whether a package-data entry covers `source`: one of its globs matches the path relative to a package
    folder its key applies to."""
    for key, patterns in package_data.items():
        for base in _package_dirs(key, source):
            if not source.is_relative_to(base):
                continue
            rel = PurePosixPath(source.relative_to(base).as_posix())
            if any(_glob_matches(rel, pattern) for pattern in patterns):
                return True
    return False


def test_there_are_kernel_sources():
    assert any(p.suffix == ".cpp" for p in SOURCES) and any(p.suffix == ".h" for p in SOURCES)


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_kernel_source_is_package_data(source):
    assert _shipped(source, _package_data()), (
        f"{source.relative_to(ROOT)} is not in [tool.setuptools.package-data] of pyproject.toml: add a glob for it"
    )


def test_glob_matching_follows_setuptools():
    assert _glob_matches(PurePosixPath("index/x.cpp"), "index/*.cpp")
    assert not _glob_matches(PurePosixPath("index/sub/x.cpp"), "index/*.cpp")
    assert not _glob_matches(PurePosixPath("x.cpp"), "index/*.cpp")
