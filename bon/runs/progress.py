"""A run's progress on stderr, and the same counters for the manifest.

On a terminal: a Rich bar with the counters and an ETA. Anywhere else (a batch job's log
file, a pipe): one status line every `log_every` seconds, so a job's log says how far it
is and whether it is still making progress; 0 turns the lines off. `--quiet` shows neither.

The pipeline reports work through the hook methods; they only add to counters and are cheap
enough to call per generation. A timer thread (not the event loop: a stalled or blocked loop
is exactly what the log must still report) turns the counters into the line and hands them
to `on_tick` — the manifest's `update` — at the same cadence.

Hooks, for whoever drives a run:
- `on_policy(samples, tokens)`: a policy generation finished (candidates, completion tokens).
- `on_generation(samples, tokens, invalid=0)`: a judge generation finished: judge samples,
  their completion tokens, and how many of them gave no valid vote.
- `on_match(match)`: a match was decided.
- `on_record(record=None)`: a record was written.
- `on_tokens(count)`: tokens streamed in (an engine that streams calls it as they arrive, so
  tokens/s moves while long generations run and only a real stall shows 0).
- `endpoints`: a callable returning (healthy, total) server endpoints, or None when there are none.

The ETA is from work, not records: `work` gives the expected samples per record (policy
candidates, judge samples: matches × votes, as `bon plan` counts them) and `max_tokens`
each role's token budget; the tokens per sample are those measured so far (half the
budget until a sample of that role has finished). Work expected for this run's records
against the tokens done (streamed, or finished where nothing streams) at the run's rate
so far gives the time left — from the first tokens on, long before the first record.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TextIO

from bon.config import DEFAULT_LOG_EVERY

Endpoints = Callable[[], "tuple[int, int] | None"]


def duration(seconds: float | None) -> str:
    """3h05m, 4m10s, 12s: short enough for a status line."""
    if seconds is None:
        return "?"
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def _rate(per_second: float) -> str:
    """Records per second, or per minute or hour when that is the figure a person can read."""
    if per_second >= 0.1 or per_second == 0:
        return f"{per_second:.2f} rec/s"
    if per_second * 60 >= 0.1:
        return f"{per_second * 60:.2f} rec/min"
    return f"{per_second * 3600:.2f} rec/h"


def status_line(c: dict[str, Any]) -> str:
    """The status line for `RunProgress.counters()` (also `bon status`'s)."""
    total = c["records_total"]
    done = f"{c['records_done']:,}/{total:,} records" if total is not None else f"{c['records_done']:,} records"
    if total:
        done += f" ({c['records_done'] / total:.0%})"
    parts = [done, _rate(c["records_per_s"]), f"ETA {duration(c['eta_s'])}"]
    if c.get("candidates"):  # the policy's work, while sampling (or sampling and judging) runs
        parts.append(f"candidates {c['candidates']:,}")
    parts.append(f"judge samples {c['judge_samples']:,}")
    if c["judge_samples"]:
        parts.append(f"invalid {c['invalid_votes'] / c['judge_samples']:.1%}")
    parts.append(f"{c['tokens_per_s']:,.0f} tok/s")
    silent = c.get("silent_s")
    if not c["tokens_per_s"] and silent is not None and silent >= 1:  # a stall, named as one
        parts.append(f"no tokens{' from ' + c['source'] if c.get('source') else ''} for {duration(silent)}")
    if c["endpoints"]:
        parts.append(f"endpoints {c['endpoints']['healthy']}/{c['endpoints']['total']} healthy")
    parts.append(f"elapsed {duration(c['elapsed_s'])}")
    return "bon: " + " · ".join(parts)


def _rounded(value: float | None) -> int | None:
    return None if value is None else round(value)


@dataclass(frozen=True)
class Work:
    """What one record is expected to take, as `bon plan` counts it: policy samples, judge
    samples and the judged matches they are spread over (the ETA's yardstick)."""

    policy_samples: float
    judge_samples: float
    judged_matches: float = 0


class RunProgress:
    def __init__(
        self,
        enabled: bool = True,
        total: int | None = None,
        log_every: float = DEFAULT_LOG_EVERY,
        endpoints: Endpoints | None = None,
        on_tick: Callable[[dict[str, Any]], None] | None = None,
        stream: TextIO | None = None,
        work: Work | None = None,
        max_tokens: tuple[int, int] = (0, 0),
        source: str = "",
    ):
        """`enabled`: show anything on stderr at all (False for --quiet). `on_tick` gets
        `counters()` every `log_every` seconds (60 when the lines are off) even when nothing
        is shown, so the manifest follows a quiet run or one on a terminal too."""
        self._own_stream = stream is None
        self.stream = stream or _private_stderr()
        terminal = self.stream.isatty()
        self.total = total
        self.endpoints = endpoints
        self.on_tick = on_tick
        self.lines = enabled and not terminal and log_every > 0
        self.interval = log_every or DEFAULT_LOG_EVERY
        self.records = self.matches = 0
        self.judge_samples = self.invalid = 0
        self.policy_samples = 0
        self.tokens = 0
        # (policy, judge): samples a record is expected to take, and each role's token budget
        self.work, self.max_tokens = work, max_tokens
        self.policy_tokens = self.judge_tokens = 0  # of finished samples, by role
        self.streamed = 0  # tokens as they arrived (engines that stream)
        self.last_token_at: float | None = None
        self.source = source  # what streams, for the line naming a stall ("http://…")
        self.started = time.monotonic()
        self._last = (self.started, 0)  # (time, tokens) at the previous tick: tok/s is "now"
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._progress = None
        if enabled and terminal:  # Rich only here: every bon command imports this module
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                SpinnerColumn,
                TextColumn,
                TimeElapsedColumn,
            )

            self._progress = Progress(
                SpinnerColumn(),
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                # bon's own ETA (records/s over the run), the one the log line and manifest show
                TextColumn("ETA {task.fields[eta]}"),
                TimeElapsedColumn(),
                TextColumn("{task.fields[counters]}"),
                console=Console(file=self.stream),
                transient=True,
            )
            self._task = self._progress.add_task("records", total=total, counters="", eta="?")

    # ---- hooks (see the module docstring) ----

    def on_policy(self, samples: int, tokens: int) -> None:
        self.policy_samples += samples
        self.policy_tokens += tokens
        self.tokens += tokens
        self._refresh()

    def on_generation(self, samples: int, tokens: int, invalid: int = 0) -> None:
        self.judge_samples += samples
        self.judge_tokens += tokens
        self.invalid += invalid
        self.tokens += tokens
        self._refresh()

    def on_tokens(self, count: int) -> None:
        self.streamed += count
        self.last_token_at = time.monotonic()

    def on_match(self, _match=None) -> None:
        self.matches += 1
        self._refresh()

    def on_record(self, _record=None) -> None:
        self.records += 1
        if self._progress:
            self._progress.update(self._task, advance=1, eta=duration(self._eta_s(time.monotonic())))

    # ---- the counters, the line, the bar ----

    def _done_tokens(self) -> int:
        """Work done so far, in tokens: as streamed where the engine streams, else as finished."""
        return max(self.streamed, self.tokens)

    def expected_tokens(self) -> float | None:
        """All the work this run's records take, in tokens (see the module docstring)."""
        if self.work is None or self.total is None:
            return None
        per_sample = []
        for samples, tokens, budget in (
            (self.policy_samples, self.policy_tokens, self.max_tokens[0]),
            (self.judge_samples, self.judge_tokens, self.max_tokens[1]),
        ):
            per_sample.append(tokens / samples if samples else budget / 2)
        judge_samples = self.work.judge_samples
        if self.matches and self.work.judged_matches:
            # A judge that disagrees with itself or gives invalid verdicts draws extra votes:
            # what a match has cost so far (high while matches are in flight) corrects the plan.
            judge_samples = max(judge_samples, self.work.judged_matches * self.judge_samples / self.matches)
        return self.total * (self.work.policy_samples * per_sample[0] + judge_samples * per_sample[1])

    def _eta_s(self, now: float) -> float | None:
        """Seconds left: the work left at the rate of work so far (records' rate without a
        work estimate); None with no total or nothing done yet."""
        if self.total is None:
            return None
        elapsed = max(now - self.started, 1e-9)
        expected, done = self.expected_tokens(), self._done_tokens()
        if self.records >= self.total:
            return 0.0
        if expected is not None and done and expected > done:
            return round((expected - done) / (done / elapsed), 1)
        rate = self.records / elapsed
        left = max(self.total - self.records, 0)
        return None if not rate else round(left / rate, 1)

    def counters(self, now: float | None = None) -> dict[str, Any]:
        """Everything the status line shows, as numbers (for the manifest and `bon status`)."""
        now = time.monotonic() if now is None else now
        elapsed = max(now - self.started, 1e-9)
        rate = self.records / elapsed
        since, tokens_then = self._last
        health = self.endpoints() if self.endpoints else None
        silent = None if self.last_token_at is None else now - self.last_token_at
        return {
            "records_done": self.records,
            "records_total": self.total,
            "records_per_s": round(rate, 4),
            "eta_s": self._eta_s(now),
            "elapsed_s": round(elapsed, 1),
            "candidates": self.policy_samples,
            "judge_samples": self.judge_samples,
            "invalid_votes": self.invalid,
            "matches": self.matches,
            "tokens": self.tokens,
            "work_done": self._done_tokens(),  # tokens, streamed or finished (the ETA's measure)
            "work_expected": _rounded(self.expected_tokens()),
            # over the last interval, not the run, as tokens arrive: a stalled server shows as 0 right away
            "tokens_per_s": round((self._done_tokens() - tokens_then) / max(now - since, 1e-9), 1),
            # seconds since the last streamed token, once there was one (a stall's length)
            "silent_s": None if silent is None else round(silent, 1),
            "source": self.source or None,
            "endpoints": None if health is None else {"healthy": health[0], "total": health[1]},
        }

    def tick(self) -> dict[str, Any]:
        """Write the status line (when lines are on) and hand the counters to `on_tick`."""
        now = time.monotonic()
        counters = self.counters(now)
        self._last = (now, self._done_tokens())
        if self.lines:
            self.stream.write(status_line(counters) + "\n")
            self.stream.flush()
        if self.on_tick:
            self.on_tick(counters)
        return counters

    def _refresh(self) -> None:
        if self._progress:
            invalid = f" ({self.invalid / self.judge_samples:.0%} invalid)" if self.judge_samples else ""
            endpoints = self.endpoints() if self.endpoints else None
            health = f" · endpoints {endpoints[0]}/{endpoints[1]}" if endpoints else ""
            rate = self.tokens / max(time.monotonic() - self.started, 1e-9)
            self._progress.update(
                self._task, counters=f"judge samples {self.judge_samples:,}{invalid} · {rate:,.0f} tok/s{health}"
            )

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.tick()

    def __enter__(self) -> RunProgress:
        self.started = time.monotonic()
        self._last = (self.started, self._done_tokens())
        if self._progress:
            self._progress.start()
        if self.lines or self.on_tick:
            self._thread = threading.Thread(target=self._run, name="bon-progress", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join()
        if self._progress:
            self._progress.stop()
        if self._own_stream and self.stream is not sys.stderr:
            self.stream.close()


def _private_stderr() -> TextIO:
    """A copy of stderr's file descriptor: while an engine starts, fd 2 points at the engine's
    log (bon.engines.vllm.engine_output), and the job's log must keep its status lines."""
    try:
        return os.fdopen(os.dup(sys.stderr.fileno()), "w", buffering=1, encoding="utf-8", errors="replace")
    except (AttributeError, OSError, ValueError):  # not a real file (a notebook, tests' capture)
        return sys.stderr
