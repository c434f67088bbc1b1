"""Inputs people already have: Parquet, a saved Hugging Face dataset, and the Hub (offline here)."""

import datetime

import datasets
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from bon.errors import UsageError
from bon.io.records import FieldNames, InputError, output_record, read_records
from bon.io.sources import input_rows

ROWS = [
    {"problem": "2+2?", "responses": ["4", "five"], "when": datetime.date(2025, 1, 2)},
    {"problem": "3+3?", "responses": ["6", "7"], "when": datetime.date(2025, 1, 3)},
]
FIELDS = FieldNames("problem", "responses")


def test_parquet_rows_validate_like_jsonl_lines_with_ids_from_the_row_index(tmp_path):
    path = tmp_path / "data.parquet"
    pq.write_table(pa.Table.from_pylist(ROWS), path)
    records = list(read_records(input_rows(str(path)), FIELDS))
    assert [(r.id, r.question, r.candidates) for r in records] == [(0, "2+2?", ["4", "five"]), (1, "3+3?", ["6", "7"])]
    # Arrow's dates pass through as text, so the output record can be written as JSON
    assert output_record(records[0])["when"] == "2025-01-02"


def test_a_bad_row_is_named_like_a_line(tmp_path):
    path = tmp_path / "data.parquet"
    pq.write_table(pa.Table.from_pylist([{"query": "ok"}, {"query": ""}]), path)
    with pytest.raises(InputError, match=r"line 2: `query` must be a non-empty string"):
        list(read_records(input_rows(str(path))))


def test_saved_dataset_folder_and_its_splits(tmp_path):
    rows = [{k: v for k, v in row.items() if k != "when"} for row in ROWS]
    one = tmp_path / "one"
    datasets.Dataset.from_list(rows).save_to_disk(str(one))
    assert [r.question for r in read_records(input_rows(str(one)), FIELDS)] == ["2+2?", "3+3?"]
    both = tmp_path / "both"
    datasets.DatasetDict(
        {"train": datasets.Dataset.from_list(rows), "test": datasets.Dataset.from_list(rows[1:])}
    ).save_to_disk(str(both))
    assert [r.id for r in read_records(input_rows(str(both), split="test"), FIELDS)] == [0]
    with pytest.raises(UsageError, match="has splits train, test: pick one with --split"):
        input_rows(str(both))
    with pytest.raises(UsageError, match="no split 'dev'"):
        input_rows(str(both), split="dev")


def test_hub_dataset_offline_is_one_clear_line():
    with pytest.raises(UsageError) as caught:
        input_rows("hf:someorg/no-such-dataset", split="train")
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("cannot load hf:someorg/no-such-dataset: the Hugging Face Hub is not reachable")


def test_file_forms_and_their_errors(tmp_path):
    jsonl = tmp_path / "q.jsonl"
    jsonl.write_text('{"query": "a"}\n')
    assert [r.question for r in read_records(input_rows(str(jsonl)))] == ["a"]
    with pytest.raises(UsageError, match="--split and --config pick part of a Hugging Face dataset"):
        input_rows(str(jsonl), split="train")
    with pytest.raises(UsageError, match="input file not found"):
        list(input_rows(str(tmp_path / "missing.parquet")))
    fake = tmp_path / "fake.parquet"
    fake.write_text("not parquet")
    with pytest.raises(UsageError, match="cannot read .*fake.parquet as Parquet"):
        list(input_rows(str(fake)))
    with pytest.raises(UsageError, match="expected hf:ORG/NAME"):
        input_rows("hf:")
