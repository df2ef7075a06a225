"""Counts a schemathesis CLI run from its NDJSON report: `python -m tests.api.fuzz_tally RUN.ndjson ...`.

Prints, per file and in total, the requests sent, their statuses by code and by operation, the checks that
failed, and every 4xx/5xx whose body is not in a documented error shape (the API's `{error, detail}` or
OpenAI's `{error: {...}}`). The long run's record (eval/baselines/fuzz-both-apps.md) is this output.
"""

from __future__ import annotations

import base64
import json
import sys
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class Tally:
    version: str = ""
    statuses: Counter[int | str] = field(default_factory=Counter)
    by_operation: defaultdict[str, Counter[int | str]] = field(default_factory=lambda: defaultdict(Counter))
    failed_checks: Counter[tuple[str, str]] = field(default_factory=Counter)
    bad_error_bodies: list[tuple[str, int, bytes]] = field(default_factory=list)


def error_shaped(raw: bytes) -> bool:
    try:
        body = json.loads(raw)
    except ValueError:
        return False
    return isinstance(body, dict) and ({"error", "detail"} <= body.keys() or isinstance(body.get("error"), dict))


def _interaction(tally: Tally, label: str, interaction: dict[str, Any]) -> None:
    response = interaction.get("response")
    if response is None:
        tally.statuses["no response"] += 1
        tally.by_operation[label]["no response"] += 1
        return
    code = response["status_code"]
    tally.statuses[code] += 1
    tally.by_operation[label][code] += 1
    content = response.get("content") or {}
    raw = base64.b64decode(content["$base64"]) if "$base64" in content else str(content.get("string", "")).encode()
    if code >= 400 and not error_shaped(raw):
        tally.bad_error_bodies.append((label, code, raw[:200]))


def tally_file(path: Path, tally: Tally) -> None:
    for line in path.read_text().splitlines():
        event = json.loads(line)
        if "Initialize" in event:
            tally.version = event["Initialize"]["schemathesis_version"]
        scenario = event.get("ScenarioFinished")
        if not scenario:
            continue
        recorder = scenario["recorder"]
        for checks in (recorder.get("checks") or {}).values():
            for check in checks:
                if check.get("status") == "failure":
                    tally.failed_checks[(recorder["label"], check["name"])] += 1
        for interaction in (recorder.get("interactions") or {}).values():
            _interaction(tally, recorder["label"], interaction)


def report(paths: list[Path]) -> str:
    total = Tally()
    for path in paths:
        tally_file(path, total)
    lines = [f"schemathesis {total.version}: {sum(total.statuses.values())} requests, "
             f"{len([k for k in total.by_operation if k != 'Stateful tests'])} operations",
             f"statuses: {dict(sorted(total.statuses.items(), key=str))}",
             f"failed checks: {dict(total.failed_checks) or 'none'}",
             f"error bodies not in a documented shape: {total.bad_error_bodies or 'none'}", ""]
    for label, counts in sorted(total.by_operation.items()):
        lines.append(f"| {label} | {sum(counts.values())} | "
                     f"{', '.join(f'{k}: {v}' for k, v in sorted(counts.items(), key=str))} |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(report([Path(p) for p in sys.argv[1:]]))
