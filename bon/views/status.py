"""`bon status OUTPUT`: how far a job writing OUTPUT is, from another shell or a dashboard.

Reads OUTPUT.manifest.json, which a run rewrites at every progress tick. A manifest says
"running" until the run ends, so a process that was killed outright (SIGKILL, out of memory,
a lost node) leaves it saying so; status checks: on the same host the pid must be alive, on
another host the manifest must have been updated within a few ticks. Otherwise the job is
reported as interrupted, with the command that resumes it. A pid alone may since have been
given to another process: where the manifest has the run's start time (`pid_started`,
Linux), the live process must have started then too.
"""

from __future__ import annotations

import json
import os
import socket
import time
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from bon.config import DEFAULT_LOG_EVERY
from bon.runs.checkpoint import MANIFEST_SUFFIX, manifest_path, process_started, resume_command
from bon.runs.progress import duration, status_line


def _age(stamp: str | None) -> float | None:
    """Seconds since a manifest timestamp."""
    if not stamp:
        return None
    try:
        return time.time() - datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S%z").timestamp()
    except ValueError:
        return None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def job_state(manifest: dict[str, Any]) -> tuple[str, str]:
    """The job's state in the manifest's words, and why when the manifest alone would mislead."""
    state = manifest.get("status", "running")
    if state != "running":
        return state, ""
    host, pid = manifest.get("host"), manifest.get("pid")
    if host == socket.gethostname() and isinstance(pid, int):
        if not _pid_alive(pid):
            return "interrupted", f"process {pid} on {host} is gone: killed, or the machine went down"
        started = manifest.get("pid_started")
        if started is not None and process_started(pid) not in (started, None):
            return "interrupted", f"process {pid} on {host} is gone (its pid now belongs to another process)"
        return "running", ""
    age, every = _age(manifest.get("updated")), float(manifest.get("update_every") or DEFAULT_LOG_EVERY)
    if age is not None and age > 3 * every + 60:
        return "interrupted", (
            f"no progress update for {duration(age)} (one is written every {duration(every)}); "
            f"the process on {host} cannot be checked from here"
        )
    return "running", ""


def output_lines(output: Path) -> int | None:
    """Records in OUTPUT now (one per line), counted in blocks: fine for files of many GB."""
    try:
        with open(output, "rb") as handle:
            return sum(block.count(b"\n") for block in iter(lambda: handle.read(1 << 20), b""))
    except OSError:
        return None


def report(output: Path) -> dict[str, Any]:
    """Everything `bon status` prints, as data (its --json)."""
    if output.name.endswith(MANIFEST_SUFFIX):  # the manifest itself was named
        output = output.with_name(output.name.removesuffix(MANIFEST_SUFFIX))
    path = manifest_path(output)
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        from bon.errors import UsageError

        raise UsageError(
            f"no manifest for {output} ({path.name}): was it written by bon run/sample/select -o?"
        ) from None
    except (OSError, ValueError) as exc:
        from bon.errors import UsageError

        raise UsageError(f"cannot read {path}: {exc}") from None
    state, why = job_state(manifest)
    return {
        "output": str(output),
        "state": state,
        "why": why or None,
        "host": manifest.get("host"),
        "pid": manifest.get("pid"),
        "slurm_job": manifest.get("slurm_job"),
        "shard": manifest.get("shard"),
        "started": manifest.get("started"),
        "updated": manifest.get("updated"),
        "ended": manifest.get("ended"),
        "records_in_output": output_lines(output),
        "progress": manifest.get("progress"),
        "resume_command": None if state in ("running", "complete") else resume_command(manifest),
    }


def status(
    output: Annotated[
        Path,
        typer.Argument(help="The -o OUTPUT of a bon run, sample or select (running or stopped).", show_default=False),
    ],
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the status as JSON (for dashboards and scripts).")
    ] = False,
) -> None:
    """A job's progress, ETA and state, from its manifest; how to resume a stopped one.

    The state is the manifest's word: running, complete, interrupted or failed; for a job
    that is not running, the command that resumes it."""
    from bon.errors import UsageError

    try:
        info = report(output)
    except UsageError as exc:
        typer.echo(f"bon: error: {exc}", err=True)
        raise typer.Exit(2) from None
    output = Path(info["output"])
    if as_json:
        typer.echo(json.dumps(info, indent=2, ensure_ascii=False))
        return
    where = f"pid {info['pid']} on {info['host']}" + (f", Slurm job {info['slurm_job']}" if info["slurm_job"] else "")
    age = _age(info["updated"])
    lines = [
        f"{output}: {info['state']}" + (f" ({info['why']})" if info["why"] else ""),
        f"{where}; started {info['started']}"
        + (f", ended {info['ended']}" if info["ended"] else "")
        + (f", updated {duration(age)} ago" if age is not None else ""),
    ]
    if info["shard"]:
        lines.append(f"shard {info['shard']}")
    if info["progress"]:
        progress = info["progress"]
        if info["state"] != "running":  # an ETA and rates of a stopped job would mislead
            progress = progress | {"eta_s": None, "tokens_per_s": 0}
        lines.append(status_line(progress).removeprefix("bon: ") + " (this run)")
    if info["records_in_output"] is not None:
        lines.append(f"{info['records_in_output']:,} records in {output}")
    if info["resume_command"]:
        lines.append(f"continue with: {info['resume_command']}")
    typer.echo("\n".join(lines))
