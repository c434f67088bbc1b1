"""The command line: flags -> settings -> the library; its errors -> one line and an exit code.

Exit codes: 0 done; 1 a runtime failure (a model or server failed); 2 bad usage or bad
input (nothing is sampled or judged for a file with a bad line); 3 finished, but some
records carry an `error`; 128+N stopped by signal N. `--debug` shows tracebacks.

Options are generated in bon/cli/args.py from the settings declared in bon/config.py. A backend
option is passed to the library only when it was given on the command line, so the
library's check — an option the chosen backend does not take is an error — covers every flag.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, TextIO

import typer

from bon import __version__
from bon import config as defaults
from bon.cli.args import (
    BACKEND,
    BACKEND_FLAGS,
    CONCURRENCY,
    DEBUG,
    ESCALATE,
    INPUT,
    IO,
    IO_FLAGS,
    JOB_FLAGS,
    JSON,
    JUDGE,
    JUDGE_ENGINE_ARGS,
    MODELS,
    POLICY,
    POLICY_ENGINE_ARGS,
    QUIET,
    ROLE_SERVERS,
    SEED,
    TOURNAMENT_FLAGS,
    VOTES,
    OnBadLine,
    argument,
    command,
    command_line,
    flag,
    given,
    judge_from_flags,
    make_roles,
    required,
    run_settings,
    tournament_settings,
)
from bon.cli.failures import fail
from bon.cli.outputs import COMMANDS
from bon.cli.serve import GROUPS as SERVE_GROUPS
from bon.cli.serve import serve as serve_command
from bon.errors import OutputError, UsageError, redact
from bon.io.records import RecordWriter

if TYPE_CHECKING:  # loaded when a run starts: `bon --help` stays light
    from bon.runs.progress import Work

app = typer.Typer(
    help="Best-of-N selection with reward reasoning models: sample N candidates per query, "
    "pick the best in a knockout tournament judged by majority vote.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"bon {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version.")
    ] = False,
) -> None:
    pass


@command(
    app,
    "run",
    INPUT,
    POLICY,
    JUDGE,
    BACKEND,
    ROLE_SERVERS,
    ESCALATE,
    TOURNAMENT_FLAGS,
    BACKEND_FLAGS,
    POLICY_ENGINE_ARGS,
    JUDGE_ENGINE_ARGS,
    IO_FLAGS,
    JOB_FLAGS,
)
def run(ctx: typer.Context, params: dict) -> None:
    """Sample N candidates per query, then pick the best in a knockout tournament.

    Records that already carry candidates skip sampling.
    """
    _execute(ctx, params, sample=True, select=True)


@command(app, "sample", INPUT, POLICY, SEED, BACKEND, BACKEND_FLAGS, POLICY_ENGINE_ARGS, IO_FLAGS, JOB_FLAGS)
def sample(ctx: typer.Context, params: dict) -> None:
    """Only sample: write each record with N `candidates` (records that have them pass through)."""
    _execute(ctx, params, sample=True, select=False)


@command(
    app,
    "select",
    INPUT,
    JUDGE,
    BACKEND,
    ESCALATE,
    TOURNAMENT_FLAGS,
    BACKEND_FLAGS,
    JUDGE_ENGINE_ARGS,
    IO_FLAGS,
    JOB_FLAGS,
)
def select(ctx: typer.Context, params: dict) -> None:
    """Only the tournament, for records that carry candidates (`bon sample … | bon select -`)."""
    _execute(ctx, params, sample=False, select=True)


COMPARED = [
    argument("a", "First answer, as text or @file."),
    argument("b", "Second answer, as text or @file."),
    required("query", "The query both answers respond to (text or @file).", MODELS),
]


@command(app, "compare", COMPARED, JUDGE, BACKEND, VOTES, SEED, BACKEND_FLAGS, JUDGE_ENGINE_ARGS, JSON, DEBUG)
def compare(ctx: typer.Context, params: dict) -> None:
    """Judge one pair from the command line; the reasoning streams as it is generated."""
    from bon.views.show import make_console

    as_json = params["as_json"]
    try:
        question, answers = _text_or_file(params["query"]), [_text_or_file(params["a"]), _text_or_file(params["b"])]
        _show_bon_log(as_json)
        role = judge_from_flags(params, given(ctx))
        console = make_console(highlight=False)

        def on_vote(number, first, second):
            console.print(f"\n[bold]vote {number}[/bold]: answer {'AB'[first]} shown first", style="cyan")

        async def go():
            async with role:
                return await role.acompare(
                    question,
                    *answers,
                    votes=params["votes"],
                    max_votes=params["max_votes"],
                    seed=params["seed"],
                    on_vote=None if as_json else on_vote,
                    on_text=None if as_json else lambda piece: console.out(piece, end="", highlight=False),
                )

        result = asyncio.run(go())
    except Exception as exc:
        fail(exc, params["debug"])
    if as_json:
        typer.echo(
            json.dumps(
                {
                    "query": question,
                    "candidates": answers,
                    "winner": result.winner,
                    "winner_label": "AB"[result.winner],
                    "match": {
                        "a": 0,
                        "b": 1,
                        "winner": result.winner,
                        "tally": result.tally,
                        "decided_by": result.decided_by,
                        "votes": result.votes,
                    },
                    "usage": result.usage,
                    "judge": f"{role.backend}:{params['judge']}",
                },
                ensure_ascii=False,
            )
        )
        return
    t = result.tally
    console.print(
        f"\n\n[bold]winner: answer {'AB'[result.winner]}[/bold]  (A {t['a']} – B {t['b']}, "
        f"{t['invalid']} invalid; {result.decided_by})"
    )


PAIR_FIELDS = [
    argument("input", "RewardBench-style JSONL (prompt, chosen, rejected, optional subset), or -."),
    flag(
        "output",
        Path | None,
        None,
        "Also write each pair with its votes and score here.",
        IO,
        "-o",
        "--output",
        show=False,
    ),
    flag("prompt_field", str, "prompt", "Field holding the prompt.", IO),
    flag("chosen_field", str, "chosen", "Field holding the better response.", IO),
    flag("rejected_field", str, "rejected", "Field holding the worse response.", IO),
    flag("subset_field", str, "subset", "Field naming the pair's subset (optional in records).", IO),
]


@command(
    app,
    "eval",
    PAIR_FIELDS,
    JUDGE,
    BACKEND,
    VOTES,
    SEED,
    BACKEND_FLAGS,
    JUDGE_ENGINE_ARGS,
    CONCURRENCY,
    JSON,
    QUIET,
    DEBUG,
)
def eval_(ctx: typer.Context, params: dict) -> None:
    """Pairwise accuracy of a judge on labelled pairs, overall, per subset and per vote count.

    Each pair gets --votes judgments split across both orders; a pair whose votes split
    evenly counts as half right (RewardBench's convention).
    """
    from bon.views.evaluate import PairFields, evaluate, render_report

    try:
        _show_bon_log(params["quiet"])
        role = judge_from_flags(params, given(ctx))
        fields_ = PairFields(*(params[f"{k}_field"] for k in ("prompt", "chosen", "rejected", "subset")))
        report = asyncio.run(
            _closed_after(
                evaluate(
                    role,
                    params["input"],
                    fields_,
                    votes=params["votes"],
                    seed=params["seed"],
                    concurrency=params["concurrency"],
                    output=params["output"],
                ),
                role,
            )
        )
    except Exception as exc:
        fail(exc, params["debug"], source=params["input"])
    figures = report.to_json()
    if params["as_json"]:
        typer.echo(json.dumps(figures, indent=2))
        return
    render_report(figures, params["judge"], params["votes"])


for _name, _command in COMMANDS.items():
    app.command(_name)(_command)

command(app, "serve", *SERVE_GROUPS)(serve_command)


def _show_bon_log(quiet: bool) -> None:
    """bon's own INFO lines (which model loaded where, in how long) on stderr, unless --quiet."""
    import logging

    log = logging.getLogger("bon")
    log.propagate = False
    handler = next((h for h in log.handlers if h.get_name() == "bon-stderr"), None)
    if not isinstance(handler, logging.StreamHandler):
        handler = logging.StreamHandler()
        handler.set_name("bon-stderr")
        handler.setFormatter(logging.Formatter("bon: %(message)s"))
        log.addHandler(handler)
    # This command's stderr: a caller running commands in-process may have swapped (and
    # closed) the one before, so it is replaced, not flushed as setStream would.
    handler.stream = sys.stderr
    log.setLevel(logging.WARNING if quiet else logging.INFO)


def _endpoints(*roles):
    """A callable giving (healthy, total) server endpoints for the progress line, or None."""
    servers = [r for r in roles if r is not None and not r.local]
    if not servers:
        return None

    def health():  # a role whose engine is another's (policy and judge on one server) reports None
        pairs = [h for h in (r.health() for r in servers) if h]
        return (sum(h for h, _ in pairs), sum(t for _, t in pairs)) if pairs else None

    return health


def _work_per_record(run, params: dict, policy, judge) -> Work | None:
    """The samples one record is expected to take, for the ETA from work; None when it cannot
    be told (no total, or no record to judge)."""
    from bon.runs.progress import Work

    if run.total is None:
        return None
    size = params.get("n") or 0
    if judge is not None and policy is None:  # select: the candidates the records carry
        first = next(run.records(run._quiet_bad()), None)
        size = len(first.candidates or ()) if first else 0
    try:
        from bon.views.plan import judge_work_per_record

        matches, judged = judge_work_per_record(size, run.tournament) if judge is not None and size > 1 else (0, 0)
    except Exception:  # a plug-in strategy the plan cannot play: the ETA falls back to records
        return None
    return Work(size if policy is not None else 0, judged, matches)


def _source(*roles) -> str:
    """The servers a run streams from, for the status line naming a stall."""
    urls = [u for r in roles if r is not None for u in (getattr(r.config.options, "base_url", ()) or ())]
    from bon.errors import redact

    return ", ".join(dict.fromkeys(redact(u) for u in urls))


class BadLines:
    """--on-bad-line skip: report each bad line on stderr, count it, optionally keep it in --rejects."""

    def __init__(self, rejects: Path | None):
        self.count = 0
        self._rejects = open(rejects, "w", encoding="utf-8") if rejects else None

    def __call__(self, error, text: str) -> None:
        self.count += 1
        typer.echo(f"bon: skipped line {error.line}: {error.problem}", err=True)
        if self._rejects:
            self._rejects.write(
                json.dumps({"line": error.line, "error": error.problem, "text": text}, ensure_ascii=False) + "\n"
            )
            self._rejects.flush()

    def close(self) -> None:
        if self._rejects:
            self._rejects.close()


def _execute(ctx: typer.Context, params: dict, sample: bool, select: bool) -> None:
    from bon.runs.interrupts import Interrupted, RunSignals

    try:
        with RunSignals() as signals:
            _run(ctx, params, sample, select, signals)
    except Interrupted as exc:
        typer.echo(f"bon: {exc}: stopped before the run began; nothing was written", err=True)
        raise typer.Exit(exc.exit_code) from None
    except Exception as exc:
        fail(exc, params["debug"], source=params["input"])


def _run(ctx: typer.Context, params: dict, sample: bool, select: bool, signals) -> None:
    from bon.engines import EngineError
    from bon.runs.api import Run
    from bon.runs.checkpoint import engine_log_path, resume_command
    from bon.runs.progress import RunProgress

    quiet = params["quiet"]
    skip_bad_lines = params["on_bad_line"] == OnBadLine("skip")
    if params["rejects"] and not skip_bad_lines:
        raise UsageError("--rejects goes with --on-bad-line skip")
    _show_bon_log(quiet)
    log_file = engine_log_path(params["output"]) if params["output"] else None
    policy, judge = make_roles(params, given(ctx), sample, select, {"verbose": params["verbose"], "log_file": log_file})
    config = run_settings(params)
    tournament = tournament_settings(params) if select else None
    bad_lines = BadLines(params["rejects"]) if skip_bad_lines else None
    run = Run(
        params["input"],
        policy=policy,
        judge=judge,
        config=config,
        tournament=tournament,
        bad_line=bad_lines,
        command=_safe(command_line(ctx)),
        update_every=params["log_every"] or defaults.DEFAULT_LOG_EVERY,
    )
    run.claim_output()  # a second run on OUTPUT is refused now, before the input is read
    try:
        total = run.check()
        signals.defer()  # from here a signal must not leave the output, sidecar or manifest half-written
        run.open()
    except BaseException:
        run.close()  # lets OUTPUT's lock go
        raise
    if run.torn_line_dropped and not quiet:
        typer.echo(f"bon: dropped a torn last line from {params['output']} (a crash mid-write)", err=True)
    run.progress = progress = RunProgress(
        enabled=not quiet,
        total=None if total is None else total - len(run.done),
        log_every=params["log_every"],
        endpoints=_endpoints(policy, judge),
        on_tick=run.manifest.update if run.manifest else None,
        work=_work_per_record(run, params, policy, judge),
        max_tokens=(policy.sampling.max_tokens if policy else 0, judge.sampling.max_tokens if judge else 0),
        source=_source(policy, judge),
    )
    data = None if params["output"] else StdoutRecords(_data_stdout())

    async def write() -> None:
        async with contextlib.aclosing(run.stream()) as outputs:
            async for out in outputs:
                if data and not data.write(out):
                    return  # nobody reads stdout any more (`| head`): closing the stream stops the run

    async def main() -> None:
        signals.stop_with(run.request_stop)
        await _closed_after(write(), policy, judge)

    try:
        with progress:
            asyncio.run(main())
        if data:
            data.close()
        # A signal after this point finds every record written: the run is complete.
        if signals.received:
            run.status = "interrupted"
    except (EngineError, OutputError) as exc:  # finished records are in OUTPUT, finished model work in its sidecar
        if run.manifest:
            exc.resume_command = resume_command(run.manifest.content)
        raise
    finally:
        if data:
            data.abandon()
        if bad_lines:
            bad_lines.close()
        run.close(bad_lines.count if bad_lines else 0)
    if not quiet:
        typer.echo(run.stats.summary(), err=True)
    if data and data.reader_gone:
        typer.echo("bon: stdout was closed by its reader; stopped", err=True)
        raise typer.Exit(128 + signal.SIGPIPE)
    if signals.received:
        if run.manifest:
            typer.echo(f"bon: stopped; continue with: {resume_command(run.manifest.content)}", err=True)
        raise typer.Exit(128 + signals.received[0])
    if run.stats.errors:
        raise typer.Exit(3)


async def _closed_after(work, *roles):
    """Await `work`, then close the roles' engines whatever happened (the CLI owns them)."""
    try:
        return await work
    finally:
        for role in roles:
            if role is not None:
                await role.aclose()


class StdoutRecords:
    """Records written to stdout. A reader that goes away (`bon run … | head`) stops the run
    quietly; any other failed write (a full disk behind `> out.jsonl`) is one line, exit 1,
    as for -o."""

    def __init__(self, stream: TextIO):
        self._writer = RecordWriter(stream)
        self.reader_gone = False

    def write(self, record: dict) -> bool:
        """Whether anybody still reads: False once the pipe has closed."""
        try:
            self._writer.write(record)
        except BrokenPipeError:
            self.reader_gone = True
        except OSError as exc:
            raise OutputError(exc, "stdout") from None
        return not self.reader_gone

    def close(self) -> None:
        if self.reader_gone:
            return
        try:
            self._writer.close()
        except BrokenPipeError:
            self.reader_gone = True
        except OSError as exc:
            raise OutputError(exc, "stdout") from None

    def abandon(self) -> None:
        """Close after a failure that is already being reported: a second one would hide it."""
        with contextlib.suppress(OSError):
            self._writer.close()


def _data_stdout():
    """stdout reserved for records: anything else that writes to fd 1 (engine logs, worker
    processes, native libraries) is sent to stderr instead."""
    try:
        if sys.stdout.fileno() != 1:
            return sys.stdout
    except (AttributeError, OSError, ValueError):  # not a real file (tests' capture)
        return sys.stdout
    sys.stdout.flush()
    data = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)
    return data


def _text_or_file(value: str) -> str:
    if value.startswith("@"):
        try:
            return Path(value[1:]).read_text(encoding="utf-8")
        except OSError as exc:
            raise UsageError(f"cannot read {value[1:]}: {exc.strerror}") from None
    return value


def _safe(words: list[str]) -> list[str]:
    """A command line for the manifest: URLs without credentials, in any word (`--base-url=URL`
    too); keys never reach it at all (bon only knows the variable's name)."""
    return [redact(w) for w in words]


def main() -> None:
    app()


if __name__ == "__main__":
    main()
