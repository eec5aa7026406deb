"""Progress for long work: a live bar on a terminal, periodic log lines elsewhere (CI, pods)."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

log = logging.getLogger("perucast.progress")


class _LogProgress:
    """Logs a line every ``every`` seconds or 10 % of the work, whichever comes first."""

    def __init__(self, description: str, total: int, every: float = 10.0) -> None:
        self.description, self.total, self.every = description, max(total, 1), every
        self.done = 0
        self.started = self._last_time = time.monotonic()
        self._last_pct = 0

    def advance(self, n: int = 1) -> None:
        self.done += n
        pct = int(100 * self.done / self.total)
        now = time.monotonic()
        if (
            pct >= self._last_pct + 10
            or now - self._last_time >= self.every
            or self.done >= self.total
        ):
            elapsed = now - self.started
            log.info(
                "%s: %d/%d (%d%%) %.1fs", self.description, self.done, self.total, pct, elapsed
            )
            self._last_pct, self._last_time = pct, now


class _RichProgress:
    def __init__(self, progress: Progress, task_id: int) -> None:
        self._progress, self._task = progress, task_id

    def advance(self, n: int = 1) -> None:
        self._progress.advance(self._task, n)


@contextmanager
def progress(
    description: str, total: int, *, enabled: bool = True
) -> Iterator[_LogProgress | _RichProgress]:
    """Show progress of ``total`` units of work.

    Args:
        description: What is being done, e.g. ``"satellite rows"``.
        total: Units of work (chunks, rows).
        enabled: False silences the bar (tests); log lines still go to the ``perucast`` logger.
    """
    if enabled and sys.stderr.isatty():
        with Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            transient=False,
        ) as bar:
            yield _RichProgress(bar, bar.add_task(description, total=total))
    else:
        yield _LogProgress(description, total)
