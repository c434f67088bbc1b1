"""`bon merge`: shard outputs joined in input order, in memory that stays flat however many records.

Two passes. The first reads every shard once and notes where each record lies (its file and
byte offset) in a DiskIndex; the second reads the input for the order and copies each record
from where it lies. Only one record is in memory at a time, whatever the shards' order; ids
missing from the shards go to a temporary file for the report.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from bon.errors import UsageError
from bon.io.diskindex import DiskIndex
from bon.io.output import read_output
from bon.io.records import InputError, LineFile, Record, RecordWriter

SHOWN = 20  # ids named in a report line


@dataclass
class MergeReport:
    total: int = 0  # records in the input
    written: int = 0
    missing: int = 0
    duplicates: list = field(default_factory=list)  # the first SHOWN duplicate ids
    duplicate_count: int = 0
    _missing_ids: IO[str] | None = None  # every missing id, a JSON line each (for rerun_commands)

    def missing_ids(self) -> Iterator:
        """Every missing id, in input order (read back from disk)."""
        if self._missing_ids is None:
            return iter(())
        self._missing_ids.seek(0)
        return (json.loads(line) for line in self._missing_ids)

    def close(self) -> None:
        if self._missing_ids is not None:
            self._missing_ids.close()


class _Offsets:
    """The lines of a binary file, with where the last one given began."""

    def __init__(self, handle: IO[bytes]):
        self.handle, self.start = handle, 0

    def __iter__(self) -> Iterator[bytes]:
        end = 0
        for line in self.handle:
            self.start, end = end, end + len(line)
            yield line


def merge_shards(files: list[Path], order: Iterable[Record], output: Path) -> MergeReport:
    """Write the shards' records in `order` to `output` (whole, or not at all: it is written
    beside and renamed at the end); the report says what was missing and duplicated."""
    report = MergeReport()
    handles: list[IO[bytes]] = []
    where = DiskIndex()  # json(id) -> (file number, offset)
    partial = output.with_name(output.name + ".partial")
    try:
        for file in files:
            try:
                handles.append(open(file, "rb"))
            except OSError as exc:
                raise UsageError(f"cannot read {file}: {exc.strerror}") from None
        for number, (file, handle) in enumerate(zip(files, handles)):
            lines = _Offsets(handle)
            try:
                for shard_record in read_output(lines):
                    key = json.dumps(shard_record.id)
                    if where.get(key) is not None:  # the last copy is kept, as a dict would
                        report.duplicate_count += 1
                        if len(report.duplicates) < SHOWN:
                            report.duplicates.append(shard_record.id)
                    where.put(key, number, lines.start)
            except InputError as exc:
                raise UsageError(f"{file}: {exc}") from None
        out = LineFile(partial)
        try:
            writer = RecordWriter(out)
            for record in order:
                report.total += 1
                found = where.get(json.dumps(record.id))
                if found is None:
                    report.missing += 1
                    if report._missing_ids is None:
                        report._missing_ids = tempfile.TemporaryFile("w+", encoding="utf-8")
                    report._missing_ids.write(json.dumps(record.id) + "\n")
                    continue
                number, offset = found
                handles[number].seek(offset)
                text = handles[number].readline().decode("utf-8").removeprefix("\ufeff")
                writer.write(json.loads(text))
                report.written += 1
            writer.close()
        finally:
            out.close()
        os.replace(partial, output)
    except BaseException:
        partial.unlink(missing_ok=True)
        report.close()
        raise
    finally:
        where.close()
        for handle in handles:
            handle.close()
    return report
