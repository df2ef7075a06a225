"""Progress bars for the terminal: tqdm behind the plain callbacks that long-running work reports through.

The library reports progress as `progress(done, total)` calls and never draws anything itself, so the API
server, tests and notebooks run it silently; only the CLI owns a terminal and decides to draw a bar.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


class TqdmProgress:
    """A `(done, total) -> None` callback that draws one tqdm bar, opened on the first call, closed at the end.

    `total` may change between calls (a walk that discovers files as it goes); `done` counts from the start.
    """

    def __init__(self, desc: str, *, unit: str = "it") -> None:
        self._desc = desc
        self._unit = unit
        self._bar: Any = None

    def __call__(self, done: int, total: int) -> None:
        if self._bar is None:
            from tqdm import tqdm

            self._bar = tqdm(total=total, desc=self._desc, unit=self._unit)
        self._bar.total = total
        self._bar.update(done - self._bar.n)
        if done >= total:
            self.close()

    def close(self) -> None:
        """Close the bar (safe to call twice, and when nothing was drawn)."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def __enter__(self) -> TqdmProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def tqdm_stages(*, unit: str = "it") -> Callable[[str], TqdmProgress]:
    """For work with named stages (one per eval config, say): a factory giving each stage its own bar."""
    return lambda stage: TqdmProgress(stage, unit=unit)
