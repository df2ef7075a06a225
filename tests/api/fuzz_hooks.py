"""schemathesis hooks for the long CLI run (`SCHEMATHESIS_HOOKS=tests.api.fuzz_hooks`), and the same rule for
the suite's model-server fuzz test.

A generated model name is a 404 before anything else runs; naming the served model lets the rest of the
generated request reach the engine. With `RAGSVC_FUZZ_PIN=STATE_FILE` (what `tests/api/fuzz_servers.py`
wrote), half of the requests that name a collection, agent or session name the seeded ones instead, so
generated answers, searches and chat messages get past the 404 to the retrieval and the model; deletes are
never pinned, so the seeded objects stay.
"""

from __future__ import annotations

import json
import os
import random
from functools import cache
from pathlib import Path
from typing import Any

import schemathesis

SERVED_MODEL = "smollm2"


def name_served_model(body: Any) -> None:
    if isinstance(body, dict) and isinstance(body.get("model"), str):
        body["model"] = SERVED_MODEL


@cache
def _pinned() -> dict[str, str]:
    path = os.environ.get("RAGSVC_FUZZ_PIN")
    if not path:
        return {}
    state = json.loads(Path(path).read_text())
    return {"name": "fuzz", "collection": "fuzz", "agent": state["agent"], "session_id": state["session"]}


def pin_seeded(case: schemathesis.Case) -> None:
    pinned = _pinned()
    if not pinned or case.method.upper() == "DELETE" or random.random() < 0.5:
        return
    params = case.path_parameters or {}
    for key in params.keys() & pinned.keys():
        params[key] = pinned[key]
    if isinstance(case.body, dict) and isinstance(case.body.get("collection"), str):
        case.body["collection"] = pinned["collection"]


@schemathesis.hook
def before_call(context: schemathesis.HookContext, case: schemathesis.Case, kwargs: dict[str, Any]) -> None:
    if case.operation.path.endswith("completions"):
        name_served_model(case.body)
    pin_seeded(case)
