"""`ragsvc agents ...`: generative agents from the terminal (run a town's simulation, chat, interviews).

One `typer.Typer` for the group. The simulation's `run` command lives here; other agent commands live in their
own CLI modules and add themselves through a `register(app)` function, called once each at the end of this
module, so each command keeps its own file and this group stays one list of mounts.
"""

from __future__ import annotations

import typer

app = typer.Typer(help="Generative agents: run a town's simulation, chat with an agent, interview agents.",
                  no_args_is_help=True)

# Commands defined in other modules register themselves here, one line each: `register(app)`.
