"""Every command's `--help` says what the command does and what each of its options and arguments is for."""

from __future__ import annotations

import click
import typer

from ragsvc.cli import app


def _leaves(command: click.Command, path: tuple[str, ...] = ()) -> list[tuple[str, click.Command]]:
    subcommands = getattr(command, "commands", None)
    if not subcommands:
        return [(" ".join(path), command)]
    return [leaf for name, sub in subcommands.items() for leaf in _leaves(sub, (*path, name))]


def test_every_command_and_parameter_has_help() -> None:
    leaves = _leaves(typer.main.get_command(app))
    assert len(leaves) > 30
    missing = [f"{path}: command" for path, command in leaves if not (command.help or "").strip()]
    missing += [f"{path}: {'/'.join(param.opts)}" for path, command in leaves for param in command.params
                if param.name != "help" and not (getattr(param, "help", None) or "").strip()]
    assert missing == [], "say what these do in their help text"


def test_help_paragraphs_flow_as_one_text_not_as_the_sources_lines() -> None:
    # typer keeps the line breaks of every paragraph after the first, which printed half-lines in --help
    for path, command in _leaves(typer.main.get_command(app)):
        for paragraph in (command.help or "").split("\n\n"):
            lines = paragraph.splitlines()
            assert len(lines) <= 1 or paragraph.startswith("\b") or any(
                line.lstrip().startswith("- ") for line in lines), f"{path}: {paragraph!r}"


def test_unwrap_joins_lines_and_keeps_lists_and_verbatim_paragraphs() -> None:
    from ragsvc.cli.help_text import unwrap

    text = """First line
    goes on.

    Second paragraph
    goes on too.

    - a list item
    - another

    \bkept
    as written"""
    assert unwrap(text) == ("First line goes on.\n\nSecond paragraph goes on too.\n\n- a list item\n- another\n\n"
                            "\bkept\nas written")
