"""Which deterministic slice of the input this process takes: `--shard I/N` or `--shard auto`.

A record belongs to shard `derive_seed("shard", id) % N`, so every machine computes the same
split from the ids alone and `bon merge` can tell which shard owes a missing record.

`--shard auto` reads the slice from the scheduler that started the process:
- Slurm job arrays: SLURM_ARRAY_TASK_ID − SLURM_ARRAY_TASK_MIN of SLURM_ARRAY_TASK_COUNT.
  Only a contiguous array (`--array=0-7`, `--array=1-8%2`) maps task ids onto 0…N−1; a
  stepped or listed one (`--array=0-14:2`, `--array=1,4,9`) would leave shards no task
  runs, so it is refused rather than silently losing records.
- Kubernetes Indexed Jobs: JOB_COMPLETION_INDEX, with the count from `--shards N` (the Job's
  `completions`, which Kubernetes does not put in the pod's environment).
- torchrun, Ray, MPI launchers and the like: RANK of WORLD_SIZE.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

from bon.errors import UsageError

Shard = tuple[int, int]  # (index, count), 0 <= index < count


def parse_shard(value: str | None, shards: int | None = None, environ: Mapping[str, str] = os.environ) -> Shard | None:
    """`--shard` (and `--shards`) as (index, count); None for the whole input."""
    if value is None:
        if shards is not None:
            raise UsageError("--shards goes with --shard auto (the count for a Kubernetes Indexed Job)")
        return None
    if value == "auto":
        return auto_shard(environ, shards)
    try:
        index, count = (int(part) for part in value.split("/"))
    except ValueError:
        raise UsageError(f"--shard takes I/N (e.g. 0/4) or auto, got {value!r}") from None
    if count < 1 or not 0 <= index < count:
        raise UsageError(f"--shard {value}: need 0 <= I < N")
    if shards is not None and shards != count:
        raise UsageError(f"--shard {value} and --shards {shards} disagree on the number of shards")
    return index, count


def _int(environ: Mapping[str, str], name: str) -> int | None:
    text = environ.get(name, "").strip()
    if not text:
        return None
    try:
        return int(text)
    except ValueError:
        raise UsageError(f"--shard auto: {name}={text!r} is not a whole number") from None


def auto_shard(environ: Mapping[str, str] = os.environ, shards: int | None = None) -> Shard:
    """The shard the scheduler gave this process (see the module's docstring)."""
    task = _int(environ, "SLURM_ARRAY_TASK_ID")
    if task is not None:
        index, count = _slurm_array(environ, task)
        source = "the Slurm array"
    elif (k8s := _int(environ, "JOB_COMPLETION_INDEX")) is not None:
        if shards is None:
            raise UsageError(
                "--shard auto in a Kubernetes Indexed Job needs --shards N "
                "(the Job's completions: the pod is not told the count)"
            )
        index, count, source = k8s, shards, "JOB_COMPLETION_INDEX"
    elif (rank := _int(environ, "RANK")) is not None:
        world = _int(environ, "WORLD_SIZE")
        if world is None:
            raise UsageError("--shard auto: RANK is set but WORLD_SIZE is not")
        index, count, source = rank, world, "RANK/WORLD_SIZE"
    else:
        raise UsageError(
            "--shard auto found no scheduler: none of SLURM_ARRAY_TASK_ID (Slurm array), "
            "JOB_COMPLETION_INDEX (Kubernetes Indexed Job), RANK/WORLD_SIZE is set; pass --shard I/N"
        )
    if count < 1 or not 0 <= index < count:
        raise UsageError(f"--shard auto: {source} gives shard {index} of {count}; need 0 <= I < N")
    if shards is not None and shards != count:
        raise UsageError(f"--shards {shards} disagrees with {source}, which has {count} shards")
    return index, count


def _slurm_array(environ: Mapping[str, str], task: int) -> Shard:
    low, high = _int(environ, "SLURM_ARRAY_TASK_MIN"), _int(environ, "SLURM_ARRAY_TASK_MAX")
    count, step = _int(environ, "SLURM_ARRAY_TASK_COUNT"), _int(environ, "SLURM_ARRAY_TASK_STEP")
    if low is None or count is None:
        raise UsageError(
            "--shard auto: SLURM_ARRAY_TASK_ID is set without SLURM_ARRAY_TASK_MIN and "
            "SLURM_ARRAY_TASK_COUNT (Slurm older than 17.11?); pass --shard I/N"
        )
    # Contiguous means the ids from MIN to MAX are all there: a list (1,4,9) or a step (0-14:2)
    # has fewer tasks than that span, and shards with no task would go missing.
    if (high is not None and high - low + 1 != count) or (step not in (None, 1) and count > 1):
        span = f"{low}-{high}" if high is not None else f"from {low}"
        raise UsageError(
            f"--shard auto needs a contiguous Slurm array (e.g. --array=0-{count - 1}); this one has "
            f"{count} tasks over ids {span}"
            + (f" in steps of {step}" if step not in (None, 1) else "")
            + ": pass --shard I/N yourself, or submit --array=0-N-1"
        )
    return task - low, count


def in_shard(record_id, shard: Shard | None) -> bool:
    """A deterministic 1/N of the records, by id: the same split on every machine."""
    return shard is None or shard_of(record_id, shard[1]) == shard[0]


def shard_of(record_id, count: int) -> int:
    """The shard (of `count`) that owns a record."""
    from bon.tournament import derive_seed

    return derive_seed("shard", record_id) % count


def shard_text(shard: Shard | None) -> str | None:
    """The resolved `I/N` for the manifest (a `--shard auto` run records which shard it was)."""
    return None if shard is None else f"{shard[0]}/{shard[1]}"


_SHARD_TEXT = re.compile(r"^(\d+)/(\d+)$")


def read_shard_text(text) -> Shard | None:
    """A manifest's `shard` back as (index, count); None for anything but `I/N`."""
    match = _SHARD_TEXT.match(text) if isinstance(text, str) else None
    return (int(match[1]), int(match[2])) if match else None


def rerun_commands(missing_ids, manifests: list[dict]) -> list[str]:
    """For `bon merge`: one line per shard that owes records, with the command that (re)runs it.

    `manifests` are the given shard outputs' manifests. A shard whose output is there but
    short (stopped, failed) is resumed with its own command; a shard with no output at all
    gets a sibling's command with the shard and the output's number changed.
    """
    from bon.runs.checkpoint import resume_command

    by_shard: dict[int, dict[int, dict[str, Any]]] = {}
    for manifest in manifests:
        shard = read_shard_text(manifest.get("shard"))
        if shard:
            by_shard.setdefault(shard[1], {})[shard[0]] = manifest
    if len(by_shard) != 1:
        return [
            "bon: cannot tell which shards owe them: the shards' manifests do not agree on one I/N "
            "(rerun with --resume the shard runs that did not complete)"
        ]
    count, known = next(iter(by_shard.items()))
    owed: dict[int, int] = {}
    for record_id in missing_ids:
        index = shard_of(record_id, count)
        owed[index] = owed.get(index, 0) + 1
    lines = []
    for index in sorted(owed):
        manifest = known.get(index) or _sibling_for(index, count, next(iter(known.values())))
        how = "rerun it" if index not in known else "resume it"
        lines.append(
            f"bon: shard {index}/{count} is missing {owed[index]} records; {how} with: {resume_command(manifest)}"
        )
    return lines


_NUMBER = re.compile(r"(?<!\d)\d+(?!\d)")


def _sibling_for(index: int, count: int, sibling: dict) -> dict:
    """A sibling shard's manifest turned into the missing shard's: its `I/N` and its output's
    number shifted by the same amount (out.2.jsonl for shard 2 next to out.0.jsonl for shard 0;
    out.3.jsonl when the files were numbered from 1 by a `--array=1-N` job)."""
    from bon.runs.checkpoint import rewrite_option

    own = read_shard_text(sibling.get("shard"))
    assert own is not None, "a sibling is chosen by its shard"
    args = rewrite_option(
        sibling.get("command") or [], ("-o", "--output"), lambda output: _shift_number(output, index - own[0])
    )
    return sibling | {"shard": f"{index}/{count}", "command": args}


def _shift_number(path: str, by: int) -> str:
    """The one number in a file's name, shifted; a name with none or several is left as it is
    (the user then sees the sibling's name in the command and fixes it)."""
    head, _, name = path.rpartition("/")
    numbers = _NUMBER.findall(name)
    if len(numbers) != 1:
        return path
    name = _NUMBER.sub(lambda m: str(int(m[0]) + by).zfill(len(m[0])), name)
    return f"{head}/{name}" if head else name
