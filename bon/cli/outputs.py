"""Commands that read bon's outputs and load no model: show, score, merge.

Each is registered on the app by bon/cli.py; they share its error conventions (one line
on stderr, exit 2 for bad usage or input).
"""

from __future__ import annotations

import json
import os
import sys
from contextlib import nullcontext
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, TypeAlias

import typer

from bon.cli.args import (
    CANDIDATES_FIELD,
    IO,
    JSON,
    OVERWRITE,
    QUERY_FIELD,
    RUN,
    TOURNAMENT_FLAGS,
    AnswerCheck,
    argument,
    choice_value,
    flag,
    handler,
    tournament_settings,
)
from bon.cli.failures import fail
from bon.errors import UsageError
from bon.io.sources import input_rows
from bon.io.stats import WHERE_KINDS
from bon.views.pairs import MODES as PAIR_MODES

if TYPE_CHECKING:  # Typer reads the generated annotations; the type checker sees their values' types
    QueryField: TypeAlias = str
    CandidatesField: TypeAlias = str
    Overwrite: TypeAlias = bool
    WhereKind: TypeAlias = str
    PairMode: TypeAlias = str
else:
    QueryField, CandidatesField, Overwrite = (f.annotation for f in (QUERY_FIELD, CANDIDATES_FIELD, OVERWRITE))
    WhereKind = Enum("WhereKind", {kind: kind for kind in WHERE_KINDS}, type=str)
    PairMode = Enum("PairMode", {mode: mode for mode in PAIR_MODES}, type=str)


# Options `score` and `curve` share, declared once.
ReferenceField = Annotated[str, typer.Option(help="Field holding the reference answer.")]
Check = Annotated[
    AnswerCheck,
    typer.Option(help="exact: final answers (last \\boxed{} or whole text) equal; math: equivalent by math-verify."),
]


def answer_checker(check: str):
    """How final answers compare (--check); exit 2 with one line when math-verify is missing."""
    from bon.tournament.answers import Checker

    try:
        return Checker(choice_value(check))
    except ImportError as exc:
        typer.echo(f"bon: error: {exc}", err=True)
        raise typer.Exit(2) from None


def open_run(file: str):
    """A bon output file (or stdin for -) to read; exit 2 with one line if it cannot be opened."""
    try:
        return sys.stdin if file == "-" else open(file, encoding="utf-8")
    except OSError as exc:
        typer.echo(f"bon: error: cannot read {file}: {exc.strerror}", err=True)
        raise typer.Exit(2) from None


def run_records(handle, file: str):
    """The records of an open bon output; exit 2 with one line naming a bad line (a torn last one is skipped)."""
    from bon.io.output import read_output
    from bon.io.records import InputError

    try:
        yield from read_output(handle)
    except InputError as exc:
        typer.echo(f"bon: error: {file}: {exc}", err=True)
        raise typer.Exit(2) from None


def show(
    file: Annotated[str, typer.Argument(help="A bon output file, or - for stdin.", show_default=False)],
    id: Annotated[str | None, typer.Option("--id", help="Show the record with this id.", show_default=False)] = None,
    index: Annotated[
        int | None, typer.Option(min=0, help="Show the record at this 0-based position.", show_default=False)
    ] = None,
    full: Annotated[
        bool, typer.Option("--full", help="Show whole texts and reasoning, not their first and last lines.")
    ] = False,
    vote: Annotated[
        int | None,
        typer.Option(min=1, help="Show only vote N of the record (numbered in the tree), in full.", show_default=False),
    ] = None,
    where: Annotated[
        list[WhereKind] | None,
        typer.Option(
            "--where",
            help="List the records where this happens (repeatable; a record matching any is listed): invalid votes, "
            "tiebreak matches, disagree (the two orders' majorities preferred different candidates), error, "
            "truncated votes, same_answer matches.",
            show_default=False,
        ),
    ] = None,
    as_json: Annotated[
        bool,
        typer.Option("--json", help="Print the summary (or the record, or the --where list as JSON lines) as JSON."),
    ] = False,
    pager: Annotated[bool, typer.Option(help="Open long output in a pager when stdout is a terminal.")] = True,
) -> None:
    """Read a run: the judge's figures, the records where something happened, or one record.

    Without options, a summary of the judge's behaviour; with --where, one line per record
    that matched; with --id or --index, that record's bracket with every vote."""
    from bon.views.show import Summary, make_console, print_long, render_record, render_summary, where_line, where_row

    handle = open_run(file)
    console = make_console()
    os.environ.setdefault("LESS", "-R")  # the pager shows colours instead of escape codes
    with handle:
        records = run_records(handle, file)
        if where and id is None and index is None:
            kinds = [choice_value(kind) for kind in where]
            for record in records:
                row = where_row(record, kinds)
                if row is not None:
                    typer.echo(json.dumps(row, ensure_ascii=False) if as_json else where_line(row))
            return
        if id is None and index is None:
            summary = Summary()
            for record in records:
                summary.add(record)
            if as_json:
                typer.echo(json.dumps(summary.to_json(), indent=2))
            else:
                console.print(render_summary(summary))
            return
        chosen = None
        for position, record in enumerate(records):
            if (id is not None and str(record.id) == id) or position == index:
                chosen = record
                break
    if chosen is None:
        what = f"id {id!r}" if id is not None else f"index {index}"
        typer.echo(f"bon: error: no record with {what} in {file}", err=True)
        raise typer.Exit(2)
    if as_json:
        typer.echo(json.dumps(chosen.data, ensure_ascii=False, indent=2))
        return
    print_long(console, render_record(chosen, full=full, vote=vote), pager)


def score(
    file: Annotated[
        str, typer.Argument(help="A bon output file (with candidates and best), or -.", show_default=False)
    ],
    reference_field: ReferenceField = "answer",
    check: Check = "exact",
    as_json: Annotated[bool, typer.Option("--json", help="Print the figures as JSON.")] = False,
) -> None:
    """Best-of-N accuracy against references, beside the oracle, first pick and majority vote.

    bon's pick is scored beside the oracle (any candidate right), the first candidate and
    the majority vote over final answers."""
    from bon.views.evaluate import ScoreReport
    from bon.views.show import make_console

    checker = answer_checker(check)
    handle = open_run(file)
    report = ScoreReport()
    with handle:
        for record in run_records(handle, file):
            report.add(record, reference_field, checker)
    figures = report.to_json()
    if as_json:
        typer.echo(json.dumps(figures, indent=2))
        return
    if not figures["records"]:
        typer.echo(f"bon: error: no record in {file} has candidates, best and `{reference_field}`", err=True)
        raise typer.Exit(2)
    console = make_console()
    for label, key in (
        ("bon's pick", "accuracy"),
        ("oracle (any candidate right)", "oracle"),
        ("first candidate", "first_candidate"),
        ("majority vote of answers", "majority_vote"),
    ):
        console.print(f"{label:<30} {figures[key]:.1%}")
    console.print(
        f"{figures['records']} records scored ({choice_value(check)})"
        + (f", {figures['skipped']} skipped (no reference or candidates)" if figures["skipped"] else "")
    )


def curve(
    file: Annotated[
        str,
        typer.Argument(
            help="A pool run (bon select --strategy pool) with reference answers, or -.", show_default=False
        ),
    ],
    reference_field: ReferenceField = "answer",
    check: Check = "exact",
    budget: Annotated[
        list[int] | None,
        typer.Option(
            "--budget",
            min=1,
            help="A swiss budget to replay, in judge samples per query (repeatable).",
            show_default="1, 1.5, 2, 3 × (n-1)",
        ),
    ] = None,
    seed: Annotated[int, typer.Option(help="The replayed tournaments' seed (a live run with it plays the same).")] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="Print the figures as JSON.")] = False,
    plot: Annotated[
        Path | None,
        typer.Option(
            "--plot",
            help='Also draw the curves into this PNG (needs matplotlib: pip install "bon\\[plot]").',
            show_default="none",
        ),
    ] = None,
) -> None:
    """Accuracy per judge sample and token: every strategy replayed from one pool run.

    Knockout at 1/3/5 votes (also with early stopping and answer-aware), elo, and swiss at
    several budgets, each replayed from the pool's recorded votes (no judge call), beside
    the pool's own pick, the majority vote of final answers and the oracle (pass@N)."""
    from bon.views.curve import PLOT_INSTALL, render_table
    from bon.views.curve import curve as make_curve
    from bon.views.curve import plot as draw

    if plot is not None:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            typer.echo(f"bon: error: --plot needs matplotlib: {PLOT_INSTALL}", err=True)
            raise typer.Exit(2) from None
    checker = answer_checker(check)
    handle = open_run(file)
    with handle:
        try:
            figures = make_curve(run_records(handle, file), reference_field, checker, budget, seed, source=file)
        except UsageError as exc:
            typer.echo(f"bon: error: {exc}", err=True)
            raise typer.Exit(2) from None
    if as_json:
        typer.echo(json.dumps(figures, indent=2))
    else:
        render_table(figures, file)
    if plot is not None:
        draw(figures, str(plot))
        typer.echo(f"bon: curves drawn in {plot}", err=True)


def merge(
    files: Annotated[list[Path], typer.Argument(help="Shard outputs (from --shard I/N runs).", show_default=False)],
    output: Annotated[Path, typer.Option("-o", "--output", help="The merged file.", show_default=False)],
    input: Annotated[
        str | None,
        typer.Option(
            "--input",
            help="The input the shards came from, for input order [default: from the shards' manifests].",
            show_default=False,
        ),
    ] = None,
    query_field: QueryField = QUERY_FIELD.default,
    candidates_field: CandidatesField = CANDIDATES_FIELD.default,
    overwrite: Overwrite = OVERWRITE.default,
) -> None:
    """Join shard outputs in input order; report missing and duplicate ids (exit 1 if any).

    Refused while a run writes OUTPUT or one of the shards (a shard still being written would
    be reported missing records it is about to write)."""
    from itertools import islice

    from bon.io.diskindex import DiskIndex
    from bon.io.records import FieldNames, read_records
    from bon.runs.checkpoint import LEGACY_SIDECAR_SUFFIX, SIDECAR_SUFFIX, manifest_path
    from bon.runs.lock import OutputLock, writer_of
    from bon.runs.merge import SHOWN, merge_shards

    lock, seen = OutputLock(output), DiskIndex()  # seen: the input's ids, on disk like the shards' index
    try:
        lock.acquire()
        if output.exists() and not overwrite:
            raise UsageError(f"{output} exists: add --overwrite to replace it")
        for file in files:
            if file.name.endswith((SIDECAR_SUFFIX, LEGACY_SIDECAR_SUFFIX)):
                raise UsageError(
                    f"{file} is a run's sidecar (its unfinished model work), not a shard output: leave it out"
                )
            holder = writer_of(file)
            if holder:
                raise UsageError(f"{file} is still being written by {holder}: merge once its run has ended")
        manifests = []
        for file in files:
            try:
                manifests.append(json.loads(manifest_path(file).read_text()))
            except (OSError, ValueError):
                pass
        if input is None:
            sources = {m["input"] for m in manifests if "input" in m}
            if len(sources) != 1:
                raise UsageError("cannot tell the input from the shards' manifests: pass --input INPUT")
            input = sources.pop()
        order = read_records(input_rows(input), FieldNames(query_field, candidates_field), seen=seen)
        report = merge_shards(files, order, output)
    except Exception as exc:
        fail(exc, False, source=input)
    finally:
        seen.close()
        lock.release()
    typer.echo(f"bon: merged {report.written} of {report.total} records into {output}", err=True)
    if report.missing:
        shown = ", ".join(map(str, islice(report.missing_ids(), SHOWN)))
        typer.echo(
            f"bon: {report.missing} missing ids: {shown}" + (" …" if report.missing > SHOWN else ""),
            err=True,
        )
        from bon.runs.shards import rerun_commands

        for line in rerun_commands(report.missing_ids(), manifests):
            typer.echo(line, err=True)
    if report.duplicate_count:
        shown = ", ".join(map(str, report.duplicates))
        typer.echo(
            f"bon: {report.duplicate_count} duplicate ids (the last copy kept): {shown}",
            err=True,
        )
    report.close()
    if report.missing or report.duplicate_count:
        raise typer.Exit(1)


from bon.views.status import status  # noqa: E402  (its own module: it reads manifests, not records)


def pairs(
    file: Annotated[str, typer.Argument(help="A bon output file, or - for stdin.", show_default=False)],
    output: Annotated[
        Path | None,
        typer.Option("-o", "--output", help="Write the pairs here (JSONL) [default: stdout].", show_default=False),
    ] = None,
    mode: Annotated[
        PairMode,
        typer.Option(
            help="matches: one pair per judged match; best-vs-rest: the winner against every other candidate; "
            "best-vs-worst: against the first eliminated (knockout) or the lowest rated (elo)."
        ),
    ] = "matches",
    min_margin: Annotated[
        float,
        typer.Option(
            help="Drop pairs whose margin (the winner's share of valid votes, or the elo rating gap) is below this."
        ),
    ] = 0.0,
    conversational: Annotated[
        bool,
        typer.Option(
            "--conversational",
            help="TRL's conversational format: the prompt as messages, chosen and rejected as one assistant message "
            "each (always so for `messages` input).",
        ),
    ] = False,
    query_field: QueryField = QUERY_FIELD.default,
    overwrite: Overwrite = OVERWRITE.default,
) -> None:
    """Preference pairs (prompt, chosen, rejected) from a run's judged matches, for DPO-style training."""
    from bon.io.records import RecordWriter
    from bon.views.pairs import PairCounts, all_pairs

    if output is not None and output.exists() and not overwrite:
        typer.echo(f"bon: error: {output} exists: add --overwrite to replace it", err=True)
        raise typer.Exit(2)
    handle = open_run(file)
    counts = PairCounts()
    with handle, open(output, "w", encoding="utf-8") if output else nullcontext(sys.stdout) as out:
        writer = RecordWriter(out)
        for pair in all_pairs(
            run_records(handle, file), choice_value(mode), min_margin, conversational, query_field, counts
        ):
            writer.write(pair)
    typer.echo(f"bon: {counts.line()}" + (f" -> {output}" if output else ""), err=True)


PLAN_OPTIONS = [
    argument("input", "JSONL input (as for run or select), or - for stdin."),
    RUN["n"],
    *TOURNAMENT_FLAGS,
    flag(
        "previous",
        str | None,
        None,
        "A previous bon output: its judge tokens per sample give the total tokens.",
        IO,
        "--from",
        show=False,
    ),
    flag(
        "tokens_per_second",
        float | None,
        None,
        "The judge engine's generated tokens per second (with --from: hours).",
        IO,
        min=0.001,
        show=False,
    ),
    QUERY_FIELD,
    CANDIDATES_FIELD,
    *JSON,
]


@handler(PLAN_OPTIONS)
def plan(ctx: typer.Context, params: dict) -> None:
    """What judging INPUT will take (matches, judge samples, tokens, hours); nothing is loaded or sent."""
    input, previous, tokens_per_second = params["input"], params["previous"], params["tokens_per_second"]
    from bon.io.records import FieldNames, read_records
    from bon.views.plan import make_plan, measured_tokens_per_sample

    try:
        per_sample = None
        if previous is not None:
            with open(previous, encoding="utf-8") as handle:
                per_sample = measured_tokens_per_sample(previous, handle)
        tournament = tournament_settings(params)
        records = read_records(input_rows(input), FieldNames(params["query_field"], params["candidates_field"]))
        result = make_plan(records, params["n"], tournament, per_sample, tokens_per_second)
    except OSError as exc:
        typer.echo(f"bon: error: cannot read {exc.filename}: {exc.strerror}", err=True)
        raise typer.Exit(2) from None
    except Exception as exc:
        fail(exc, False, source=input)
    figures = result.to_json()
    if params["as_json"]:
        typer.echo(json.dumps(figures))
        return
    votes, samples = tournament.votes, figures["judge_samples"]
    typer.echo(f"queries        {figures['queries']}")
    typer.echo(f"candidates     {figures['candidates']}")
    typer.echo(f"matches        {figures['matches']}")
    typer.echo(
        f"judge samples  {samples['usual']} usual ({votes} a match), {samples['min']} min "
        f"(every vote agrees), {samples['max']} max (the vote budget)"
    )
    if figures["judge_tokens"] is not None:
        typer.echo(f"judge tokens   {figures['judge_tokens']} ({per_sample:.0f} a sample, measured in {previous})")
    if figures["hours"] is not None:
        typer.echo(f"hours          {figures['hours']:.2f} at {tokens_per_second:g} tokens/s")


def browse(
    file: Annotated[str, typer.Argument(help="A bon output file.", show_default=False)],
) -> None:
    """A terminal browser for a run: its records, their brackets and each vote's reasoning.

    / searches, letters toggle the --where filters; Enter opens a record with its bracket
    and each vote's full reasoning; q or Escape goes back."""
    try:
        from bon.views.browse import BrowseApp
    except ImportError as exc:
        typer.echo(f"bon: error: {exc}", err=True)
        raise typer.Exit(2) from None
    if not os.path.isfile(file):
        typer.echo(f"bon: error: cannot read {file}: not a file", err=True)
        raise typer.Exit(2)
    BrowseApp(file).run()


def plugins(
    as_json: Annotated[bool, typer.Option("--json", help="Print the list as JSON lines.")] = False,
) -> None:
    """The backends and strategies bon can use: its own and every installed plug-in's, with versions.

    Plug-ins register through the entry-point groups bon.backends and bon.strategies; one
    that fails to load is listed with its error."""
    from bon.plugins import BACKENDS, installed

    found = installed()
    if as_json:
        for plugin in found:
            typer.echo(
                json.dumps(
                    {
                        "kind": "backend" if plugin.group == BACKENDS else "strategy",
                        "name": plugin.name,
                        "package": plugin.package,
                        "version": plugin.version,
                        "target": plugin.target,
                        "error": plugin.error,
                    }
                )
            )
        return
    width = max(len(p.name) for p in found)
    for plugin in found:
        kind = "backend " if plugin.group == BACKENDS else "strategy"
        line = f"{kind}  {plugin.name:<{width}}  {plugin.package} {plugin.version}  ({plugin.target})"
        typer.echo(line + (f"  FAILED: {plugin.error}" if plugin.error else ""))


COMMANDS = {
    "show": show,
    "score": score,
    "curve": curve,
    "merge": merge,
    "status": status,
    "pairs": pairs,
    "plan": plan,
    "browse": browse,
    "plugins": plugins,
}
