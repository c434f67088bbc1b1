"""Progress on stderr: a Rich bar when stderr is a terminal, nothing when piped or --quiet."""

from __future__ import annotations

import sys
import time

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn


class RunProgress:
    def __init__(self, enabled: bool, total: int | None):
        self.console = Console(stderr=True)
        self.enabled = enabled and sys.stderr.isatty()
        self.samples = 0
        self.matches = 0
        self.tokens = 0
        self.started = time.monotonic()
        self._progress = None
        if self.enabled:
            self._progress = Progress(
                SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                TextColumn("{task.fields[judge]}"), TimeElapsedColumn(), console=self.console, transient=True,
            )
            self._task = self._progress.add_task("records", total=total, judge="")

    def __enter__(self) -> "RunProgress":
        if self._progress:
            self._progress.start()
        return self

    def __exit__(self, *exc) -> None:
        if self._progress:
            self._progress.stop()

    def on_generation(self, samples: int, tokens: int) -> None:
        self.samples += samples
        self.tokens += tokens
        self._refresh()

    def on_match(self, _match) -> None:
        self.matches += 1
        self._refresh()

    def _refresh(self) -> None:
        if self._progress:
            rate = self.tokens / max(time.monotonic() - self.started, 1e-9)
            self._progress.update(
                self._task, judge=f"matches {self.matches} · judge samples {self.samples} · {rate:,.0f} tok/s"
            )

    def on_record(self, _record) -> None:
        if self._progress:
            self._progress.advance(self._task)
