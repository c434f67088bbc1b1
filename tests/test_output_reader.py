"""bon.io.output, the one reader of bon's output: previous-version files read as before,
bad lines named, and a library run that never loads Rich."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bon.cli.main import app
from bon.io.output import OutputRecord, read_output
from bon.io.records import InputError
from bon.io.stats import Summary

FIXTURES = Path(__file__).parent / "fixtures"
# Real outputs of bon 0.1.0 (records without a schema version), from SmolLM2-135M as policy
# and judge: a knockout run (`bon run examples/queries.jsonl -n 4 --votes 3`) and an
# answer-aware elo run over its candidates (`bon select --strategy elo --group-by-answer exact`,
# its first record: a 135M judge on CPU takes minutes a record).
V0_1 = {"knockout": FIXTURES / "v0_1_knockout.jsonl", "elo": FIXTURES / "v0_1_elo.jsonl"}
# What `bon show` and `bon score` printed for them before the typed reader existed (captured
# with bon 0.1.0's code, COLUMNS=100): each case's file, arguments and stdout.
EXPECTED = json.loads((FIXTURES / "v0_1_show_expected.json").read_text())
runner = CliRunner()


@pytest.mark.parametrize("case", EXPECTED, ids=lambda c: f"{c['file']}:{' '.join(c['args'][2:]) or 'summary'}")
def test_previous_version_output_shows_exactly_as_before(case):
    args = [str(FIXTURES / case["file"]) if a == "{F}" else a for a in case["args"]]
    result = runner.invoke(app, args, env={"COLUMNS": "100", "NO_COLOR": "1"})
    assert result.exit_code == case["exit_code"], result.output
    assert result.stdout == case["stdout"]


def test_every_previous_version_fixture_is_covered():
    assert {case["file"] for case in EXPECTED} == {path.name for path in V0_1.values()}


def test_knockout_record_typed():
    records = list(read_output(V0_1["knockout"].open(encoding="utf-8")))
    assert [r.id for r in records] == ["capital", "haiku", "math", "tip"]
    record = records[0]
    assert record.data == json.loads(V0_1["knockout"].read_text().splitlines()[0])  # nothing lost
    assert record.get("query") == record.query() == "What is the capital of Australia? Answer in one sentence."
    assert record.best == record.candidates[record.best_index] and record.error is None
    assert record.sampling.policy.startswith("hf:") and len(record.sampling.finish_reasons) == 4
    assert record.tournament.strategy == "knockout" and record.tournament.seed == 0
    assert record.tournament.judge.startswith("hf:") and record.tournament.answer_groups is None
    assert record.ranking is None and record.scores is None
    matches = list(record.matches())
    assert [(m.round, m.position) for m in matches] == [(0, 0), (0, 1), (1, 0)]  # bracket order
    identical, played, final = matches
    assert identical.decided_by == "identical" and not identical.judged and identical.votes == ()
    assert played.judged and played.loser == 2 and played.tally.invalid == len(played.votes) == 5
    assert final.winner == record.best_index
    votes = [vote for _, vote in record.votes()]
    assert len(votes) == record.usage.judge_samples
    assert sum(v.completion_tokens for v in votes) == record.usage.judge_completion_tokens
    first = votes[0]
    assert (first.first, played.second(first), first.valid, first.invalid_reason) == (0, 2, False, "no_verdict")


def test_elo_record_typed():
    record = next(read_output(V0_1["elo"].read_text().splitlines()))
    assert record.tournament.strategy == "elo"
    assert sorted(record.ranking) == list(range(len(record.candidates))) and record.best_index == record.ranking[0]
    assert len(record.scores) == len(record.candidates)
    teams = record.tournament.answer_groups
    assert teams and sorted(m for team in teams for m in team.members) == list(range(len(record.candidates)))
    assert all(match.round == 0 for match in record.matches())  # a round-robin is one round


def test_a_lenient_reader_keeps_what_it_does_not_know():
    raw = {
        "id": 3,
        "answer": "4",
        "tournament": {"strategy": "new", "rounds": [], "future_key": [1]},
        "usage": {"judge_samples": 2},
        "scores": "not a list",
    }
    record = OutputRecord.from_json(raw)
    assert record.tournament.extra == {"future_key": [1]} and record.tournament.seed is None
    assert record.usage.judge_samples == 2 and record.usage.judge_completion_tokens is None
    assert record.candidates is None and record.scores is None and record.best_index is None
    assert record["answer"] == "4" and "answer" in record and record.data is raw
    assert list(record.matches()) == [] and list(OutputRecord.from_json({"id": 1}).votes()) == []


def test_match_and_team_helpers_for_pair_makers():
    vote = {"first": 1, "verdict": 1, "reasoning": "r", "finish_reason": "length", "completion_tokens": 9}
    record = OutputRecord.from_json(
        {
            "id": "t",
            "candidates": ["x", "y", "z"],
            "tournament": {
                "strategy": "knockout",
                "seed": 1,
                "answer_groups": [{"answer": "1", "members": [0, 2]}, {"answer": None, "members": [1]}],
                "rounds": [
                    [
                        {
                            "a": 0,
                            "b": 1,
                            "winner": 1,
                            "tally": {"a": 1, "b": 2, "invalid": 0},
                            "decided_by": "majority",
                            "votes": [vote],
                        },
                        {"a": 2, "b": None, "winner": 2, "decided_by": "bye", "votes": []},
                    ]
                ],
            },
        }
    )
    match, bye = record.matches()
    assert (match.loser, match.winner_share, match.judged, match.second(match.votes[0])) == (0, 0.6667, True, 0)
    assert match.votes[0].cut_off and (bye.bye, bye.loser, bye.winner_share, bye.judged) == (True, None, None, False)
    assert record.tournament.team_mates(0, 2) and not record.tournament.team_mates(0, 1)


# ------------------------------------------------------------- bad lines


def test_a_bad_line_is_named_after_the_records_before_it():
    lines = ['{"id": 1}', "", "{not json", '{"id": 2}']
    reader = read_output(lines)
    assert next(reader).id == 1
    with pytest.raises(InputError, match=r"^line 3: invalid JSON \(") as caught:
        next(reader)
    assert caught.value.line == 3


def test_a_line_that_is_not_an_object_is_named():
    with pytest.raises(InputError, match=r"^line 2: expected a JSON object, got list$"):
        list(read_output(['{"id": 1}', "[1, 2]"]))


def test_blank_lines_and_a_torn_last_line_are_skipped():
    assert [r.id for r in read_output(['{"id": 1}\n', "\n", '{"id": 2}\n', '{"id": 3, "cand'])] == [1, 2]


def test_show_names_the_bad_line_and_exits_2(tmp_path):
    path = tmp_path / "out.jsonl"
    path.write_text(V0_1["knockout"].read_text().splitlines()[0] + "\n[]\n" + "{}\n")
    result = runner.invoke(app, ["show", str(path), "--json"])
    assert result.exit_code == 2
    assert f"bon: error: {path}: line 2: expected a JSON object, got list" in result.stderr


def test_summary_takes_typed_records_and_dicts_alike():
    lines = V0_1["knockout"].read_text().splitlines()
    typed, plain = Summary(), Summary()
    for record in read_output(lines):
        typed.add(record)
    for line in lines:
        plain.add(json.loads(line))
    assert typed.to_json() == plain.to_json() and typed.records == 4


# ------------------------------------------------------------- a library run loads no Rich

LIBRARY_RUN = """
import json, sys
sys.path.insert(0, sys.argv[1])
import scripted_bon  # noqa: F401  (registers the `scripted` backend, as the CLI tests use it)
import bon

with bon.Policy("pol", backend="scripted") as policy, bon.Judge("jud", backend="scripted") as judge:
    out = list(bon.run([{"id": 1, "query": "a"}, {"id": 2, "query": "b"}], policy=policy, judge=judge,
                       n=3, votes=3, output=sys.argv[2]))
loaded = sorted(name for name in sys.modules if name.split(".")[0] in ("rich", "textual"))
print(json.dumps({"records": len(out), "loaded": loaded}))
"""


def test_a_library_run_without_a_terminal_imports_neither_rich_nor_textual(tmp_path):
    out = tmp_path / "out.jsonl"
    result = subprocess.run(
        [sys.executable, "-c", LIBRARY_RUN, str(Path(__file__).parent), str(out)],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.splitlines()[-1])
    assert report == {"records": 2, "loaded": []}
    manifest = json.loads((tmp_path / "out.jsonl.manifest.json").read_text())
    assert manifest["schema_version"] == 1  # the version lives in the manifest ...
    assert all("schema_version" not in json.loads(line) for line in out.read_text().splitlines())  # ... not in records
