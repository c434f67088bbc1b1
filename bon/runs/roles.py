"""The two model roles of the Python API: `bon.Policy` samples candidates, `bon.Judge` picks.

A role names a model, a backend and that backend's typed options; its engine loads on
first use and serves every later call, until `close()` (or the end of a `with` block).

Every call has a sync and an async form. Async calls run in the caller's event loop; sync
calls run on one background loop that bon keeps in a daemon thread, so they also work
where a loop is already running (Jupyter). An engine belongs to the loop it was created
in; a call from another loop is handed to that one while it runs.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncGenerator, Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from bon import config as defaults
from bon.config import EngineConfig, SamplingConfig, TournamentConfig
from bon.engines import default_backend
from bon.engines.base import Completion, Engine, EngineWrapper, Generation, GenerationRequest
from bon.errors import UsageError
from bon.io.prompts import judge_template, policy_template
from bon.io.records import Record, output_record
from bon.plugins import backend_options, get_backend, get_strategy

T = TypeVar("T")

# ---- one background loop for the sync API ----

_background: asyncio.AbstractEventLoop | None = None
_background_lock = threading.Lock()


def _background_loop() -> asyncio.AbstractEventLoop:
    global _background
    with _background_lock:
        if _background is None or _background.is_closed():
            loop = asyncio.new_event_loop()
            threading.Thread(target=loop.run_forever, name="bon-loop", daemon=True).start()
            _background = loop
        return _background


def run_sync(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine to its end from sync code, whether or not this thread runs a loop."""
    loop = _background_loop()
    try:
        if asyncio.get_running_loop() is loop:
            coroutine.close()
            raise UsageError("a sync bon call from inside bon's own loop would wait forever: use the async form")
    except RuntimeError:
        pass  # no loop in this thread
    ended = threading.Event()

    async def watched() -> T:
        try:
            return await coroutine
        finally:
            ended.set()

    future = asyncio.run_coroutine_threadsafe(watched(), loop)
    try:
        return future.result()
    except BaseException:
        # Interrupted (Ctrl-C in a notebook): the call is cancelled on bon's loop and has
        # ended there before this returns, so nothing of it runs on behind the caller's back.
        future.cancel()
        ended.wait()
        raise


class _OnLoop(EngineWrapper):
    """An engine that lives on another (running) loop, usable from this one. Its sync
    capabilities (count_prompt_tokens, health) are thread-safe and called from here."""

    def __init__(self, engine: Engine, loop: asyncio.AbstractEventLoop):
        super().__init__(engine)
        self._loop = loop

    async def _at_home(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coroutine, self._loop))

    async def generate(self, request: GenerationRequest) -> Generation:
        return await self._at_home(self.inner.generate(request))

    async def stream(self, request: GenerationRequest) -> AsyncGenerator[str | Completion, None]:
        pieces = self.inner.stream(request)  # stepped on its engine's loop, one piece at a time

        async def next_piece() -> str | Completion | None:
            return await anext(pieces, None)

        try:
            while (piece := await self._at_home(next_piece())) is not None:
                yield piece
        finally:
            await self._at_home(pieces.aclose())

    async def close(self) -> None:  # the owner closes it
        pass


class Role:
    """A model and where it runs. Backend options are keywords (see bon/config.py: VLLMOptions,
    ServerOptions, HFOptions); one the backend does not take is a UsageError."""

    def __init__(
        self,
        model: str,
        backend: str | None = None,
        *,
        seed: int = 0,
        verbose: bool = False,
        log_file: str | Path | None = None,
        **options: Any,
    ):
        if isinstance(options.get("base_url"), str):
            options["base_url"] = (options["base_url"],)
        elif options.get("base_url") is not None:
            options["base_url"] = tuple(options["base_url"])
        name = backend or default_backend(options.get("base_url"))
        # log_file: where the engine library's own start-up output goes (None: nowhere) unless verbose
        self.config = EngineConfig(
            backend=name,
            model=model,
            options=backend_options(name, options),
            seed=seed,
            verbose=verbose,
            log_file=None if log_file is None else str(log_file),
        )
        get_backend(name).check_config(self.config)
        self._engine: Engine | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loading: asyncio.Future | None = None
        self._closed_outages = (0, 0)  # the outages of engines this role loaded and closed before

    @property
    def backend(self) -> str:
        return self.config.backend

    @property
    def local(self) -> bool:
        """Loads weights in this process (two local roles take turns on the same GPUs)."""
        return get_backend(self.config.backend).local

    async def engine(self) -> Engine:
        """The engine, loaded on first use, usable from the running loop."""
        loop = asyncio.get_running_loop()
        home = self._loop
        if home is not None and home is not loop:
            if home.is_running():
                engine = await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(self.engine(), home))
                return _OnLoop(engine, home)
            self._engine = self._loading = self._loop = None  # its loop has ended, and the engine with it
        if self._engine is not None:
            return self._engine
        if self._loading is None:
            self._loop = loop
            self._loading = asyncio.ensure_future(get_backend(self.config.backend).create(self.config))
        try:
            self._engine = await asyncio.shield(self._loading)
        except BaseException:
            if self._loading is not None and self._loading.done():
                self._loading = None
            raise
        assert self._engine is not None
        return self._engine

    def health(self) -> tuple[int, int] | None:
        """(healthy, total) server endpoints, for progress lines; None before the engine loads
        and for engines without any."""
        return self._engine.health() if self._engine is not None else None

    def outages(self) -> tuple[int, int]:
        """(times a server endpoint went down, times one came back) over this role's engines,
        closed ones too: the summary is written after the engines are shut down."""
        down, back = self._closed_outages
        now = self._engine.outages() if self._engine is not None else (0, 0)
        return down + now[0], back + now[1]

    async def aclose(self) -> None:
        """Shut the engine down (freeing its GPU memory); the next call loads it again."""
        engine, loading, loop = self._engine, self._loading, self._loop
        self._engine = self._loading = self._loop = None
        if engine is None and loading is not None and loop is asyncio.get_running_loop():
            # Stopped while it loads: a load cannot be abandoned half-way (its threads and
            # processes go on), so let it end and shut down what it made.
            try:
                engine = await asyncio.shield(loading)
            except Exception:
                return  # it failed to load: nothing to shut down (its caller reports why)
        if engine is None:
            return
        down, back = engine.outages()
        self._closed_outages = (self._closed_outages[0] + down, self._closed_outages[1] + back)
        if loop is not None and loop is not asyncio.get_running_loop() and loop.is_running():
            await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(engine.close(), loop))
        else:
            await engine.close()

    def close(self) -> None:
        """Sync close, for engines the sync calls made (`with judge:`)."""
        if self._engine is None or self._loop is None or self._loop.is_closed():
            self._engine = self._loading = self._loop = None
            return
        if self._loop is not _background:
            raise UsageError(
                f"{self!r} was used from an event loop: close it there with `await role.aclose()` or `async with role:`"
            )
        run_sync(self.aclose())

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.config.model!r}, backend={self.config.backend!r})"


class Policy(Role):
    """The model that writes candidates: N samples per query in one request."""

    def __init__(
        self,
        model: str,
        backend: str | None = None,
        *,
        temperature: float = defaults.POLICY_TEMPERATURE,
        top_p: float = defaults.POLICY_TOP_P,
        max_tokens: int = defaults.POLICY_MAX_TOKENS,
        system: str | None = None,
        **options: Any,
    ):
        super().__init__(model, backend, **options)
        self.sampling = SamplingConfig(temperature=temperature, top_p=top_p, max_tokens=max_tokens)
        self.system = system
        self.template = policy_template()


@dataclass(frozen=True)
class Selection:
    """A best-of-N pick: the winner, its index, and the record bon writes for the query."""

    best: str
    best_index: int
    record: dict[str, Any]


@dataclass(frozen=True)
class MatchResult:
    """One match: `winner` is 0 (the first answer) or 1; `votes` hold every judgment's reasoning."""

    winner: int
    tally: dict[str, int]
    votes: list[dict[str, Any]]
    decided_by: str
    usage: dict[str, int]


class Judge(Role):
    """A reward reasoning model that decides matches by majority of sampled judgments."""

    def __init__(
        self,
        model: str = defaults.DEFAULT_JUDGE,
        backend: str | None = None,
        *,
        temperature: float = defaults.JUDGE_TEMPERATURE,
        top_p: float = defaults.JUDGE_TOP_P,
        max_tokens: int = defaults.JUDGE_MAX_TOKENS,
        template: str | Path | None = None,
        escalate: Judge | None = None,
        **options: Any,
    ):
        super().__init__(model, backend, **options)
        self.sampling = SamplingConfig(temperature=temperature, top_p=top_p, max_tokens=max_tokens)
        self.template_path = None if template is None else Path(template)
        self.template = judge_template(self.template_path)
        # A second (stronger) judge for the matches this one's votes leave in doubt; its
        # engine loads on the first such match and closes with this judge.
        self.escalate = escalate

    def referee(
        self,
        engine: Engine,
        tournament: TournamentConfig,
        on_generation=None,
        on_match=None,
        escalate_engine: Callable[[], Coroutine[Any, Any, Engine]] | None = None,
    ):
        """The Referee of `tournament` on `engine`; `escalate_engine`: where the escalation
        judge's engine comes from (a run's, kept in its sidecar), else that judge's own."""
        from bon.runs.judge import Referee

        if self.escalate is not None and tournament.votes < 2:
            raise UsageError("an escalation judge needs --votes 2 or more: a single vote always agrees with itself")
        return Referee(
            engine, self.template, self.sampling, tournament, on_generation, on_match, self.escalate, escalate_engine
        )

    async def aclose(self) -> None:
        await super().aclose()
        if self.escalate is not None:
            await self.escalate.aclose()

    async def aselect(self, question: str, candidates: list[str], *, id: str | int = 0, **tournament: Any) -> Selection:
        """The best of `candidates` by this judge's tournament (keywords: TournamentConfig's)."""
        if not candidates or not all(isinstance(c, str) for c in candidates):
            raise UsageError("candidates must be a non-empty list of strings")
        record = Record(
            line=1,
            id=id,
            data={"query": question, "candidates": list(candidates)},
            question=question,
            messages=None,
            candidates=list(candidates),
        )
        await self.referee(await self.engine(), tournament_config(**tournament)).select(record)
        out = output_record(record)
        return Selection(best=out["best"], best_index=out["best_index"], record=out)

    def select(self, question: str, candidates: list[str], **kwargs: Any) -> Selection:
        return run_sync(self.aselect(question, candidates, **kwargs))

    async def acompare(
        self,
        question: str,
        a: str,
        b: str,
        *,
        votes: int = defaults.DEFAULT_VOTES,
        max_votes: int | None = None,
        seed: int = 0,
        on_vote: Callable[[int, int, int], None] | None = None,
        on_text: Callable[[str], None] | None = None,
    ) -> MatchResult:
        """One match between two answers. With `on_text`, votes run one at a time and their
        text streams through it as the judge writes (engines that stream)."""
        from bon.runs.judge import compare

        referee = self.referee(await self.engine(), tournament_config(votes=votes, max_votes=max_votes, seed=seed))
        match, usage = await compare(referee, question, [a, b], on_vote=on_vote, on_text=on_text)
        data = match.to_json()
        return MatchResult(
            winner=match.winner,
            tally=data["tally"],
            votes=data["votes"],
            decided_by=match.decided_by,
            usage=usage.to_json(),
        )

    def compare(self, question: str, a: str, b: str, **kwargs: Any) -> MatchResult:
        return run_sync(self.acompare(question, a, b, **kwargs))


def tournament_config(**kwargs: Any) -> TournamentConfig:
    """TournamentConfig from keywords, checked the way the CLI checks its flags."""
    try:
        config = TournamentConfig(**kwargs)
    except TypeError as exc:
        raise UsageError(str(exc).replace("TournamentConfig.__init__()", "tournament")) from None
    if config.votes < 1:
        raise UsageError(f"votes must be at least 1, got {config.votes}")
    if config.max_votes is not None and config.max_votes < config.votes:
        raise UsageError(f"--max-votes ({config.max_votes}) must be at least --votes ({config.votes})")
    get_strategy(config.strategy).check(config)  # an unknown name is a UsageError that lists the known
    if config.group_by_answer is not None:
        from bon.tournament.answers import Checker

        try:
            Checker(config.group_by_answer)  # an unknown kind, or math without math-verify
        except (ValueError, ImportError) as exc:
            raise UsageError(f"--group-by-answer: {exc}") from None
    return config
