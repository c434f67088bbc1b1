"""Where input records come from: JSONL (a file or stdin), Parquet, or a Hugging Face dataset.

`input_rows` gives JSONL lines: a Parquet or dataset row becomes one (JSON text, parsed
once by `read_records` like any other line), so every form meets the same validation and
field mapping, and a row's default id is its index. Parquet is read in batches through pyarrow and datasets through
the `datasets` library's own loading and cache (both the optional extra `bon[datasets]`),
so a large file never sits in memory whole.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bon.errors import UsageError
from bon.io.records import input_lines

HUB_PREFIX = "hf:"
EXTRA = 'pip install "bon[datasets]"'


def input_rows(path: str, split: str | None = None, config: str | None = None) -> Iterator[bytes | str]:
    """The input named by `path`: `-` (stdin, JSONL), `hf:ORG/NAME` (a Hub dataset), a folder
    written by `Dataset.save_to_disk`, a `.parquet` file, or else a JSONL file.

    `split` and `config` pick a part of a dataset (a Parquet or JSONL file has none).
    Problems raise UsageError with one line that says what to do.
    """
    if path.startswith(HUB_PREFIX):
        return _rows(_hub_dataset(path[len(HUB_PREFIX) :], split, config))
    local = Path(path)
    if path != "-" and local.is_dir() and _is_saved_dataset(local):
        return _rows(_saved_dataset(local, split))
    if split is not None or config is not None:
        raise UsageError(f"--split and --config pick part of a Hugging Face dataset; {path} is a file")
    if local.suffix.lower() == ".parquet":
        return _parquet_rows(local)
    return input_lines(path)


def _datasets():
    try:
        import datasets
    except ImportError:
        raise UsageError(f"reading Hugging Face datasets needs the datasets library: {EXTRA}") from None
    return datasets


def _is_saved_dataset(folder: Path) -> bool:
    # save_to_disk writes state.json (a Dataset) or dataset_dict.json (a DatasetDict)
    return (folder / "state.json").exists() or (folder / "dataset_dict.json").exists()


def _pick_split(data: Any, split: str | None, name: str):
    """One split of a DatasetDict: the one asked for, or the only one there is."""
    if not hasattr(data, "keys"):  # a Dataset: already one split
        if split is not None:
            raise UsageError(f"{name} holds one split; drop --split")
        return data
    splits = list(data.keys())
    if split is None:
        if len(splits) == 1:
            return data[splits[0]]
        raise UsageError(f"{name} has splits {', '.join(splits)}: pick one with --split")
    if split not in data:
        raise UsageError(f"{name} has no split {split!r} (it has {', '.join(splits)})")
    return data[split]


def _saved_dataset(folder: Path, split: str | None):
    datasets = _datasets()
    try:
        data = datasets.load_from_disk(str(folder))
    except (OSError, ValueError) as exc:
        raise UsageError(f"cannot load the dataset in {folder}: {_first_line(exc)}") from None
    return _pick_split(data, split, str(folder))


def _hub_dataset(name: str, split: str | None, config: str | None):
    datasets = _datasets()
    if not name or name.count("/") > 1:
        raise UsageError(f"hf:{name}: expected hf:ORG/NAME")
    try:
        data = datasets.load_dataset(name, config, split=split)
    except ConnectionError:  # also what the datasets library raises in offline mode
        raise UsageError(
            f"cannot load hf:{name}: the Hugging Face Hub is not reachable and the dataset is not "
            "in the local cache (download it where the Hub is reachable, or save_to_disk and pass "
            "the folder)"
        ) from None
    except FileNotFoundError:
        raise UsageError(f"hf:{name}: no such dataset on the Hub (or it is private)") from None
    except ValueError as exc:  # unknown split or config
        raise UsageError(f"hf:{name}: {_first_line(exc)}") from None
    return _pick_split(data, None, f"hf:{name}")


def _first_line(exc: Exception) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def _line(row: dict) -> str:
    """A row as a JSONL line. Arrow types JSON has no word for (dates, bytes, decimals)
    become text, so the output record that carries the row through can always be written."""
    return json.dumps(row, ensure_ascii=False, default=str, separators=(",", ":"))


def _rows(dataset) -> Iterator[str]:
    for row in dataset:  # a Dataset reads its Arrow file lazily, row by row
        yield _line(row)


def _parquet_rows(path: Path) -> Iterator[str]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise UsageError(f"reading Parquet needs pyarrow: {EXTRA}") from None
    try:
        parquet = pq.ParquetFile(path)
    except FileNotFoundError:
        raise UsageError(f"input file not found: {path}") from None
    except Exception as exc:  # pyarrow raises its own ArrowInvalid for a file that is not Parquet
        raise UsageError(f"cannot read {path} as Parquet: {_first_line(exc)}") from None
    for batch in parquet.iter_batches(batch_size=1024):
        for row in batch.to_pylist():
            yield _line(row)
