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
