"""A long-lived run: the roles' engines loaded once, records handed in one at a time.

`Run` takes a whole input and owns its files; a `Session` is what a server holds: the
policy and judge engines, shared by every record that many concurrent callers give to
`process` (a server's requests). Each record takes the steps it takes in a run — the
`Sampler` draws N candidates, the `Referee` plays the configured strategy — so a record
processed here comes out as `bon run` writes it for the same input and seed. Records get
priorities in the order they arrive (`request_priority`), so on engines that honour them
earlier ones finish first. Cancelling a `process` call cancels that record's work: no
engine request is sent for it afterwards; `request_stop` does the same for every record.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable
from typing import Any

from bon import config as defaults
from bon.config import SamplingConfig, TournamentConfig
from bon.engines.base import Engine, EngineError, EngineWrapper, Generation, GenerationRequest, RecordError
from bon.errors import UsageError, redact
from bon.io.records import FieldNames, Record, output_record, parse_record
from bon.runs.judge import Sampler
from bon.runs.pipeline import StopGate
from bon.runs.roles import Judge, Policy, Role


class _Watched(EngineWrapper):
    """A role's engine that notes in `down` when its upstream was given up on (an EngineError
    that is not one record's fault) and clears the note when it answers again."""

    def __init__(self, engine: Engine, names: tuple[str, ...], down: dict[str, str]):
        super().__init__(engine)
        self._names, self._down = names, down

    async def generate(self, request: GenerationRequest) -> Generation:
        try:
            generation = await self.inner.generate(request)
        except RecordError:
            raise
        except EngineError as exc:
            for name in self._names:
                self._down[name] = str(exc)
            raise
        for name in self._names:
            self._down.pop(name, None)
        return generation


class Session:
    """The policy (to sample) and the judge (to select), serving records one at a time.

    `n` and `tournament` are the defaults a `process` call may override for its record.
    Use `async with session:` (or `start()` and `aclose()`), in the loop that serves the records.
    """

    def __init__(
        self,
        policy: Policy | None = None,
        judge: Judge | None = None,
        *,
        n: int = defaults.DEFAULT_N,
        tournament: TournamentConfig | None = None,
        fields: FieldNames | None = None,
    ):
        if policy is None and judge is None:
            raise UsageError("a session needs a policy (to sample), a judge (to select) or both")
        self.policy, self.judge = policy, judge
        self.n = n
        self.tournament = tournament or TournamentConfig()
        self.fields = fields or FieldNames()
        # One engine for both roles when they name the same model in the same place (as a run does).
        self.shared = policy is not None and judge is not None and policy.config == judge.config
        self.down: dict[str, str] = {}  # role -> why its upstream was given up on (cleared when it answers)
        self._arrivals = itertools.count(1)
        self._stop = asyncio.Event()

    def _roles(self) -> list[tuple[tuple[str, ...], Role]]:
        """Each engine once, with the roles it serves."""
        if self.shared:
            assert self.policy is not None
            return [(("policy", "judge"), self.policy)]
        out: list[tuple[tuple[str, ...], Role]] = []
        if self.policy is not None:
            out.append((("policy",), self.policy))
        if self.judge is not None:
            out.append((("judge",), self.judge))
        return out

    async def start(self) -> None:
        """Load the engines now: the first record does not wait for them, and a model that
        cannot load fails here rather than in a caller's request."""
        for _, role in self._roles():
            await role.engine()

    def record(self, data: dict[str, Any]) -> Record:
        """`data` (an input object as `bon run` reads it: `query` or `messages`, optional
        `candidates`) as the next record to arrive; InputError when it is not valid.

        Its id is `data["id"]`, else 0 — as the only record of a `bon run` input — so a
        record's seeds, and so its candidates and bracket, are those `bon run` gives it.
        """
        return parse_record(data, line=next(self._arrivals), position=0, fields=self.fields)

    async def _engine(self, role: str) -> Engine:
        for names, owner in self._roles():
            if role in names:
                return _Watched(StopGate(await owner.engine(), self._stop), names, self.down)
        raise UsageError(f"this session has no {role}")

    async def process(
        self,
        record: Record,
        *,
        n: int | None = None,
        tournament: TournamentConfig | None = None,
        sampling: SamplingConfig | None = None,
        on_candidates: Callable[[Record], None] | None = None,
        on_match: Callable[[Any], None] | None = None,
    ) -> dict[str, Any]:
        """`record` sampled (when it carries no candidates) and judged: its output record.

        `n`, `tournament` (its seed seeds the sampling too, as `--seed` does) and the policy's
        `sampling` override the session's for this record; `on_candidates(record)` may edit
        the candidates before they are judged. A failure of this record alone is its `error`
        field, as in a run; an upstream given up on raises EngineError (and shows in `down`).
        """
        tournament = tournament or self.tournament
        if record.candidates is None:
            if self.policy is None:
                raise UsageError("this session has no policy: records must carry candidates")
            policy = self.policy
            sampler = Sampler(
                await self._engine("policy"),
                policy.template,
                sampling or policy.sampling,
                n or self.n,
                tournament.seed,
                policy.system,
            )
            try:
                await sampler.sample(record)
            except RecordError as exc:
                record.output["error"] = str(exc)
                return output_record(record)
        if on_candidates is not None:
            on_candidates(record)
        if self.judge is not None:
            referee = self.judge.referee(await self._engine("judge"), tournament, on_match=on_match)
            try:
                await referee.select(record)
            except RecordError as exc:
                record.output["error"] = str(exc)
        return output_record(record)

    def health(self) -> dict[str, dict[str, Any]]:
        """Per role: where its model runs (URLs without credentials), whether its upstream
        answers, and why not when it was given up on."""
        out = {}
        for names, role in self._roles():
            urls = [redact(u) for u in getattr(role.config.options, "base_url", ()) or ()]
            endpoints = role.health()
            for name in names:
                out[name] = {
                    "backend": role.backend,
                    "model": role.config.model,
                    "base_urls": urls,
                    "endpoints_up": None if endpoints is None else list(endpoints),
                    "ok": name not in self.down,
                    **({"error": self.down[name]} if name in self.down else {}),
                }
        return out

    def request_stop(self) -> None:
        """Send nothing more to the engines, for any record (a request already sent finishes)."""
        self._stop.set()

    async def aclose(self) -> None:
        self.request_stop()
        for _, role in self._roles():
            await role.aclose()

    async def __aenter__(self) -> Session:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
