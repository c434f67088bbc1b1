"""The JSONL contract: read and validate input lines, write output records.

Input: one JSON object per line with `query` (or `messages`), optional `id` and
`candidates`; every other field passes through. Output: the input object plus the fields
bon adds. This module is the one reader and the one writer of records.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Protocol

from bon.errors import BonError, OutputError, UsageError

ROLES = ("system", "user", "assistant")


class InputError(BonError, ValueError):
    """A bad input line; `str()` names the line and the problem."""

    def __init__(self, line: int, problem: str):
        super().__init__(f"line {line}: {problem}")
        self.line = line
        self.problem = problem


@dataclass(frozen=True)
class FieldNames:
    """Where the query and candidates live in the user's records."""

    query: str = "query"
    candidates: str = "candidates"


@dataclass
class Record:
    line: int  # 1-based line number in the input
    id: str | int
    data: dict[str, Any]  # the input object, passed through unchanged
    question: str  # the query as text, for the judge
    messages: list[dict[str, str]] | None  # the chat to sample from, for `messages` input
    candidates: list[str] | None
    output: dict[str, Any] = field(default_factory=dict)  # fields bon adds


def question_from_messages(messages: list[dict[str, str]]) -> str:
    """The judge's `{question}` for a chat input.

    The RRM was trained on single-turn queries. One user turn (system messages aside)
    becomes the question as it is; a longer conversation is rendered as labelled turns so
    the judge sees the context the final answer responds to.
    """
    turns = [m for m in messages if m["role"] != "system"]
    if len(turns) == 1:
        return turns[0]["content"]
    return "\n\n".join(f"{m['role'].capitalize()}: {m['content']}" for m in turns)


def _check_messages(value: Any, line: int) -> list[dict[str, str]]:
    if not isinstance(value, list) or not value:
        raise InputError(line, "`messages` must be a non-empty list of {role, content} objects")
    for i, message in enumerate(value):
        if not isinstance(message, dict) or message.get("role") not in ROLES:
            raise InputError(line, f"`messages[{i}]` needs a `role` of {', '.join(ROLES)}")
        if not isinstance(message.get("content"), str):
            raise InputError(line, f"`messages[{i}].content` must be a string")
    if value[-1]["role"] != "user":
        raise InputError(line, "`messages` must end with a user turn")
    return [{"role": m["role"], "content": m["content"]} for m in value]


def parse_record(obj: Any, line: int, position: int, fields: FieldNames) -> Record:
    """Validate one decoded JSON value; `position` is its 0-based index among records."""
    if not isinstance(obj, dict):
        raise InputError(line, f"expected a JSON object, got {type(obj).__name__}")
    messages = None
    if fields.query in obj:
        query = obj[fields.query]
        if not isinstance(query, str) or not query.strip():
            raise InputError(line, f"`{fields.query}` must be a non-empty string")
        question = query
    elif "messages" in obj:
        messages = _check_messages(obj["messages"], line)
        question = question_from_messages(messages)
    else:
        raise InputError(line, f"missing `{fields.query}` (or `messages`)")

    record_id = obj.get("id", position)
    if isinstance(record_id, bool) or not isinstance(record_id, (str, int)):
        raise InputError(line, "`id` must be a string or an integer")

    candidates = None
    if fields.candidates in obj:
        candidates = obj[fields.candidates]
        if not isinstance(candidates, list) or not candidates or not all(isinstance(c, str) and c for c in candidates):
            raise InputError(line, f"`{fields.candidates}` must be a non-empty list of non-empty strings")
    return Record(line=line, id=record_id, data=obj, question=question, messages=messages, candidates=candidates)


def decode_lines(lines: Iterable[bytes | str | dict]) -> Iterator[tuple[int, str | None, Any]]:
    """(line number, text, decoded JSON value or InputError) per non-blank line.

    A UTF-8 BOM and CRLF line ends are accepted; errors are yielded, not raised, so a
    caller may skip a bad line and go on. A dict is a record already decoded (a library
    caller's), numbered like a line; its text is None (`_dumps` it when it is needed).
    """
    for number, raw in enumerate(lines, start=1):
        if isinstance(raw, dict):
            yield number, None, raw
            continue
        if isinstance(raw, bytes):
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                yield number, raw.decode("utf-8", errors="replace"), InputError(number, f"not UTF-8 (byte {exc.start})")
                continue
        else:
            text = raw
        if number == 1:
            text = text.removeprefix("\ufeff")
        if not text.strip():
            continue
        try:
            yield number, text, json.loads(text)
        except json.JSONDecodeError as exc:
            yield number, text, InputError(number, f"invalid JSON ({exc.msg} at column {exc.colno})")


OnBadLine = Callable[[InputError, str], None]


class SeenIds(Protocol):
    def __contains__(self, record_id: object, /) -> bool: ...

    def add(self, record_id: Any, /) -> None: ...


def read_records(
    lines: Iterable[bytes | str | dict],
    fields: FieldNames = FieldNames(),
    on_bad_line: OnBadLine | None = None,
    seen: SeenIds | None = None,
) -> Iterator[Record]:
    """Records from JSONL lines (or decoded rows, see `decode_lines`), validated one by one.

    A bad line raises InputError, or — with `on_bad_line` — is reported to it and skipped.
    Blank lines are skipped. The default `id` is the 0-based position among non-blank
    lines, so ids do not shift when a bad line is skipped. `seen` keeps the ids met for the
    duplicate check (a set unless given: `bon merge` keeps them on disk).
    """
    if seen is None:
        seen = set()
    for position, (number, text, value) in enumerate(decode_lines(lines)):
        try:
            if isinstance(value, InputError):
                raise value
            record = parse_record(value, number, position, fields)
            if record.id in seen:
                raise InputError(number, f"duplicate id {record.id!r}")
        except InputError as error:
            if on_bad_line is None:
                raise
            on_bad_line(error, _dumps(value) if text is None else text.rstrip("\r\n"))
            continue
        seen.add(record.id)
        yield record


def output_record(record: Record) -> dict[str, Any]:
    """The input object with bon's fields added (they replace same-named input fields)."""
    out = dict(record.data)
    out.setdefault("id", record.id)
    out.update(record.output)
    return out


class LineFile:
    """A file bon owns (OUTPUT, its sidecar, a merged output) that always ends on a whole line.

    Lines go to the file in os.write calls, with no buffer left to land later: a write that
    fails (a full disk, a file-size limit, a vanished or read-only directory) is cut back to
    where its line began and raised as OutputError naming the file. A file deleted while it
    is written (or its directory) is noticed at the next sync rather than written into the void.
    """

    def __init__(self, path: Path, append: bool = False):
        self.path = path
        try:
            self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | (os.O_APPEND if append else os.O_TRUNC), 0o666)
            self.size = os.fstat(self._fd).st_size
        except OSError as exc:
            raise OutputError(exc, path) from None

    def write(self, line: str) -> int:
        """Write one whole line; where it starts in the file."""
        start, data = self.size, line.encode("utf-8")
        pending = memoryview(data)
        try:
            while pending:
                pending = pending[os.write(self._fd, pending) :]
        except OSError as exc:
            with contextlib.suppress(OSError):  # if even this fails, a resume drops the torn line
                os.ftruncate(self._fd, start)
            raise OutputError(exc, self.path) from None
        self.size = start + len(data)
        return start

    def flush(self) -> None:
        """Nothing is buffered (a stream's interface, for RecordWriter)."""

    def sync(self) -> None:
        try:
            os.fsync(self._fd)
            if os.fstat(self._fd).st_nlink == 0:
                raise OSError(errno.ENOENT, "No such file or directory (deleted while it was written)")
        except OSError as exc:
            raise OutputError(exc, self.path) from None

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


class RecordWriter:
    """Writes one record per line, each in a single write call, flushed at once.

    One write per line (not the text, then the newline) so that a crash never leaves a
    record on disk without its line end once the write returned.
    """

    SYNC_EVERY_RECORDS = 100
    SYNC_EVERY_SECONDS = 30.0

    def __init__(self, stream: IO[str] | LineFile):
        self._stream = stream
        self._unsynced = 0
        self._last_sync = time.monotonic()

    def write(self, record: dict[str, Any]) -> None:
        self._stream.write(_dumps(record) + "\n")
        self._stream.flush()
        self._unsynced += 1
        # flush() hands the line to the OS (safe from a crash of bon); fsync at checkpoints
        # makes it safe from a crash of the machine too, without paying for it every line.
        if self._unsynced >= self.SYNC_EVERY_RECORDS or time.monotonic() - self._last_sync > self.SYNC_EVERY_SECONDS:
            self.sync()

    def sync(self) -> None:
        if isinstance(self._stream, LineFile):
            self._stream.sync()  # a file bon owns: its failures are the run's
        else:
            self._stream.flush()
            with contextlib.suppress(OSError, ValueError, AttributeError):  # a pipe or a test's capture
                os.fsync(self._stream.fileno())
        self._unsynced, self._last_sync = 0, time.monotonic()

    def close(self) -> None:
        self.sync()


def _dumps(obj: Any) -> str:
    # Non-ASCII stays readable in the file; json escapes control characters either way.
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


def _stdin_lines() -> Iterator[bytes]:
    """stdin's lines, read with os.read rather than through sys.stdin's buffer.

    A run reads stdin on a daemon thread that may still be waiting for a line when the run
    stops (the program upstream has not finished). Python's shutdown aborts the process if
    such a thread holds sys.stdin's buffer lock ("could not acquire lock … at interpreter
    shutdown"); a plain os.read holds no lock.
    """
    try:
        fd = sys.stdin.fileno()
    except (AttributeError, OSError, ValueError):  # replaced by a caller (a test runner's stream)
        yield from sys.stdin.buffer
        return
    pending = bytearray()
    while chunk := os.read(fd, 1 << 16):
        start, search_from = 0, len(pending)  # what is pending holds no newline
        pending += chunk
        while (end := pending.find(b"\n", search_from)) >= 0:
            yield bytes(pending[start : end + 1])
            start = search_from = end + 1
        del pending[:start]
    if pending:
        yield bytes(pending)


def input_lines(path: str) -> Iterator[bytes]:
    """The raw lines of a JSONL file, or of stdin for `-`."""
    if path == "-":
        yield from _stdin_lines()
        return
    try:
        with open(path, "rb") as handle:
            yield from handle
    except FileNotFoundError:
        raise UsageError(f"input file not found: {path}") from None
    except IsADirectoryError:
        raise UsageError(f"input is a directory: {path}") from None
    except PermissionError:
        raise UsageError(f"input file not readable: {path}") from None
