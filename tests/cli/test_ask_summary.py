"""`ragsvc ask`'s closing summary says why an answer ended when it did not end by itself."""

from __future__ import annotations

import pytest

from ragsvc.answer.types import Answer
from ragsvc.cli.ask import _print_sources


@pytest.mark.parametrize(("reason", "said"), [("stop", None), ("length", "stopped at the token limit"),
                                              ("rounds", "FLARE's rounds ran out"),
                                              ("repetition", "cut where the model began repeating itself")])
def test_the_summary_says_why_the_answer_ended(capsys, reason, said):
    _print_sources(Answer(text="Tides follow the moon.", citations=[], passages=[], retrievals=[], generations=[],
                          timings_ms={"total_ms": 1200.0}, finish_reason=reason))
    summary = capsys.readouterr().out.strip().splitlines()[-1]
    assert summary.startswith("(0 retrieval(s)") and summary.endswith(f"1.2 s; {said})" if said else "1.2 s)")
