"""The Prometheus metrics of one bon serve app, in a registry of its own (two apps in one
process — tests, or two mounted endpoints — never share counters)."""

from __future__ import annotations

import functools
import time
from collections import deque
from typing import Any

TOKEN_RATE_WINDOW = 60.0  # seconds the tokens/s gauges average over


class Metrics:
    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "bon_requests", "Requests answered, by endpoint and HTTP status.", ["endpoint", "status"], registry=registry
        )
        self.candidates = Counter("bon_candidates", "Candidates sampled from the policy.", registry=registry)
        self.judge_samples = Counter("bon_judge_samples", "Judgments sampled from the judge.", registry=registry)
        self.invalid_votes = Counter(
            "bon_invalid_votes", "Judgments without a valid verdict (truncated, none, unreadable).", registry=registry
        )
        self.matches = Counter(
            "bon_matches", "Matches played, by what decided them.", ["decided_by"], registry=registry
        )
        self.tokens = Counter("bon_tokens", "Tokens, by role and kind.", ["role", "kind"], registry=registry)
        self.waiting = Gauge("bon_requests_waiting", "Requests waiting for a selection slot.", registry=registry)
        self.in_flight = Gauge("bon_requests_in_flight", "Requests in selection.", registry=registry)
        self.time_to_answer = Histogram(
            "bon_time_to_answer_seconds",
            "Seconds from a request's arrival to its answer (answered requests).",
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800),
            registry=registry,
        )
        self._recent: deque[tuple[float, str, int]] = deque()  # (when, role, completion tokens)
        self._in_window = {"policy": 0, "judge": 0}  # their sums, kept as entries come and go
        rate = Gauge(
            "bon_completion_tokens_per_second",
            f"Completion tokens per second over the last {TOKEN_RATE_WINDOW:g} s, by role.",
            ["role"],
            registry=registry,
        )
        for role in ("policy", "judge"):
            rate.labels(role).set_function(functools.partial(self._rate, role))

    def _rate(self, role: str) -> float:
        cutoff = time.monotonic() - TOKEN_RATE_WINDOW
        while self._recent and self._recent[0][0] < cutoff:
            _, old_role, tokens = self._recent.popleft()
            self._in_window[old_role] -= tokens
        return self._in_window[role] / TOKEN_RATE_WINDOW

    def _add_recent(self, now: float, role: str, tokens: int) -> None:
        self._recent.append((now, role, tokens))
        self._in_window[role] += tokens

    def answered(self, endpoint: str, status: int, seconds: float | None = None) -> None:
        self.requests.labels(endpoint, str(status)).inc()
        if seconds is not None:
            self.time_to_answer.observe(seconds)

    def match(self, decided_by: str) -> None:
        self.matches.labels(decided_by).inc()

    def record(self, record: dict[str, Any]) -> None:
        """The model work one finished record cost."""
        now = time.monotonic()
        sampling = record.get("sampling") or {}
        if sampling:
            self.candidates.inc(len(record.get("candidates") or ()))
            self.tokens.labels("policy", "prompt").inc(sampling.get("prompt_tokens") or 0)
            self.tokens.labels("policy", "completion").inc(sampling.get("completion_tokens") or 0)
            self._add_recent(now, "policy", sampling.get("completion_tokens") or 0)
        usage = record.get("usage") or {}
        if usage:
            self.judge_samples.inc(usage.get("judge_samples") or 0)
            self.invalid_votes.inc(usage.get("invalid_votes") or 0)
            self.tokens.labels("judge", "prompt").inc(usage.get("judge_prompt_tokens") or 0)
            self.tokens.labels("judge", "completion").inc(usage.get("judge_completion_tokens") or 0)
            self._add_recent(now, "judge", usage.get("judge_completion_tokens") or 0)
        self._rate("policy")  # prunes the window, so memory stays flat without scrapes too

    def exposition(self) -> tuple[bytes, str]:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return generate_latest(self.registry), CONTENT_TYPE_LATEST
