"""Command help as typer should render it: docstring paragraphs with their line breaks joined.

Docstrings are wrapped at the source's line length. typer (0.29) joins the lines of a command's first paragraph
but keeps every line break of the later ones, so `--help` printed them as ragged half-lines. Joining them here,
once for every command of the app, lets the terminal wrap each paragraph to its own width. A paragraph that is
a list (lines starting with "- ") or marked with typer's "\\b" keeps its lines.
"""

from __future__ import annotations

import inspect

import typer


def unwrap(text: str) -> str:
    """`text` with each paragraph's single line breaks turned into spaces, lists and "\\b" paragraphs kept."""
    paragraphs = inspect.cleandoc(text).split("\n\n")
    return "\n\n".join(p if p.startswith("\b") or any(line.lstrip().startswith("- ") for line in p.splitlines())
                       else " ".join(line.strip() for line in p.splitlines()) for p in paragraphs)


def unwrap_all(app: typer.Typer) -> None:
    """Set every command's help (the docstring when none was given) to its unwrapped text, in every group."""
    for command in app.registered_commands:
        text = command.help or inspect.getdoc(command.callback)
        if text:
            command.help = unwrap(text)
    for group in app.registered_groups:
        if group.typer_instance is not None:
            unwrap_all(group.typer_instance)
