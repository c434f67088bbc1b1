"""The command line on a scripted engine whose preferences are known (it prefers longer answers)."""

import json
import random

import pytest
import typer
from typer.testing import CliRunner

import bon.engines
from bon.cli.main import app
from bon.engines.base import EngineError
from conftest import read_jsonl, write_jsonl

runner = CliRunner()

QUERIES = [{"id": f"q{i}", "query": f"question {i}", "topic": "kept"} for i in range(5)]


MODEL_COMMANDS = ("run", "sample", "select", "compare", "eval")


def invoke(*args, input=None):
    """The CLI as a user runs it; commands that load a model get the scripted backend unless a
    test names another."""
    args = [str(a) for a in args]
    if args and args[0] in MODEL_COMMANDS and "--backend" not in args:
        args += ["--backend", "scripted"]
    return runner.invoke(app, args, input=input)


def test_run_samples_then_the_longest_candidate_wins(tmp_path, scripted):
    src = write_jsonl(tmp_path / "q.jsonl", QUERIES)
    result = invoke("run", src, "--policy", "pol", "--judge", "jud", "-n", 5, "--votes", 3, "-q")
    assert result.exit_code == 0, result.output
    records = read_jsonl(result.stdout)
    assert [r["id"] for r in records] == [q["id"] for q in QUERIES]  # input order
    for record in records:
        assert record["topic"] == "kept"  # other fields pass through
        assert len(record["candidates"]) == 5
        assert record["best"] == max(record["candidates"], key=len)
        assert record["candidates"][record["best_index"]] == record["best"]
        tournament = record["tournament"]
        assert tournament["strategy"] == "knockout" and tournament["seed"] == 0
        matches = [m for r in tournament["rounds"] for m in r]
        assert sum(m["decided_by"] != "bye" for m in matches) == 4
        for m in matches:
            assert set(m) == {"a", "b", "winner", "tally", "decided_by", "votes"}
            for vote in m["votes"]:
                assert set(vote) == {"first", "verdict", "reasoning", "finish_reason", "completion_tokens"}
        usage = record["usage"]
        assert usage["judge_samples"] == 12 and usage["judge_requests"] == 8 and usage["invalid_votes"] == 0


def test_records_with_candidates_skip_sampling(tmp_path, scripted):
    rows = [{"query": "q", "candidates": ["short", "the longest one", "mid size"]}]
    src = write_jsonl(tmp_path / "q.jsonl", rows)
    result = invoke("run", src, "--policy", "pol", "-q")
    assert result.exit_code == 0, result.output
    (record,) = read_jsonl(result.stdout)
    assert record["best"] == "the longest one" and record["id"] == 0
    assert all("### Assistant 1" in r.messages[-1]["content"] for r in scripted.requests)  # no policy call


def test_stdin_to_stdout_and_sample_then_select(scripted):
    stdin = "".join(json.dumps(q) + "\n" for q in QUERIES)
    sampled = invoke("sample", "-", "--policy", "pol", "-n", 3, "-q", input=stdin)
    assert sampled.exit_code == 0, sampled.output
    records = read_jsonl(sampled.stdout)
    assert all(len(r["candidates"]) == 3 and "best" not in r for r in records)
    selected = invoke("select", "-", "-q", input=sampled.stdout)
    assert selected.exit_code == 0, selected.output
    for record in read_jsonl(selected.stdout):
        assert record["best"] == max(record["candidates"], key=len)


def test_field_mapping_reads_other_datasets(tmp_path, scripted):
    rows = [{"problem": "2+2?", "responses": ["4", "four, because 2+2=4"]}]
    src = write_jsonl(tmp_path / "q.jsonl", rows)
    result = invoke("select", src, "--query-field", "problem", "--candidates-field", "responses", "-q")
    assert result.exit_code == 0, result.output
    (record,) = read_jsonl(result.stdout)
    assert record["best"] == "four, because 2+2=4" and record["responses"] == rows[0]["responses"]
    assert "2+2?" in scripted.requests[0].messages[-1]["content"]


def test_messages_input_is_sampled_as_a_chat(tmp_path, scripted):
    chat = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi there"}]
    src = write_jsonl(tmp_path / "q.jsonl", [{"messages": chat}])
    result = invoke("run", src, "--policy", "pol", "-n", 2, "-q")
    assert result.exit_code == 0, result.output
    assert scripted.requests[0].messages == chat
    assert "## Query\n\nhi there\n\n" in scripted.requests[1].messages[-1]["content"]


def test_output_file_and_summary_on_stderr(tmp_path, scripted):
    src = write_jsonl(tmp_path / "q.jsonl", QUERIES[:2])
    out = tmp_path / "out.jsonl"
    result = invoke("run", src, "--policy", "pol", "-n", 2, "-o", out)
    assert result.exit_code == 0, result.output
    assert result.stdout == ""
    assert "bon: 2 records" in result.stderr
    assert len(read_jsonl(out.read_text())) == 2


def test_order_is_kept_whatever_finishes_first(tmp_path, scripted):
    rng = random.Random(5)
    scripted.latency = lambda request: rng.random() / 100
    rows = [{"id": i, "query": f"q{i}"} for i in range(30)]
    src = write_jsonl(tmp_path / "q.jsonl", rows)
    result = invoke("run", src, "--policy", "pol", "-n", 4, "--concurrency", 7, "-q")
    assert result.exit_code == 0, result.output
    assert [r["id"] for r in read_jsonl(result.stdout)] == list(range(30))


def test_same_seed_same_brackets_whatever_the_concurrency(tmp_path, scripted):
    src = write_jsonl(tmp_path / "q.jsonl", QUERIES)
    one = invoke("run", src, "--policy", "pol", "-n", 6, "--concurrency", 1, "-q").stdout
    many = invoke("run", src, "--policy", "pol", "-n", 6, "--concurrency", 16, "-q").stdout
    other = invoke("run", src, "--policy", "pol", "-n", 6, "--seed", 1, "-q").stdout
    assert one == many
    assert one != other


@pytest.mark.parametrize(
    "line, message",
    [
        ("{not json", "line 2: invalid JSON"),
        ("[1, 2]", "line 2: expected a JSON object"),
        ('{"query": ""}', "line 2: `query` must be a non-empty string"),
        ('{"text": "no query"}', "line 2: missing `query`"),
        ('{"query": "q", "candidates": []}', "line 2: `candidates` must be a non-empty list"),
        ('{"query": "q", "id": 1.5}', "line 2: `id` must be a string or an integer"),
        ('{"messages": [{"role": "robot", "content": "x"}]}', "line 2: `messages[0]` needs a `role`"),
        ('{"id": "a", "query": "dup"}', "line 2: duplicate id 'a'"),
    ],
)
def test_bad_line_is_one_line_exit_2_and_costs_no_model_work(tmp_path, scripted, line, message):
    src = write_jsonl(tmp_path / "q.jsonl", ['{"id": "a", "query": "fine"}', line])
    result = invoke("run", src, "--policy", "pol")
    assert result.exit_code == 2
    assert message in result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert result.stdout == "" and scripted.requests == []


def test_stdin_bad_line_keeps_the_records_before_it(scripted):
    stdin = json.dumps({"query": "good"}) + "\n{oops\n"
    result = invoke("run", "-", "--policy", "pol", "-n", 2, "-q", input=stdin)
    assert result.exit_code == 2
    assert "-: line 2: invalid JSON" in result.stderr
    assert len(read_jsonl(result.stdout)) == 1


def test_bom_crlf_and_blank_lines_are_accepted(tmp_path, scripted):
    src = tmp_path / "q.jsonl"
    src.write_bytes(b'\xef\xbb\xbf{"query": "a"}\r\n\r\n{"query": "b"}\r\n')
    result = invoke("run", src, "--policy", "pol", "-n", 2, "-q")
    assert result.exit_code == 0, result.output
    assert [r["id"] for r in read_jsonl(result.stdout)] == [0, 1]


def test_select_needs_candidates(tmp_path, scripted):
    src = write_jsonl(tmp_path / "q.jsonl", [{"query": "q"}])
    result = invoke("select", src)
    assert result.exit_code == 2 and "line 1: missing `candidates`" in result.stderr


def test_usage_errors_exit_2(tmp_path, scripted, monkeypatch):
    assert invoke("run", tmp_path / "nope.jsonl", "--policy", "p").exit_code == 2
    src = write_jsonl(tmp_path / "q.jsonl", QUERIES[:1])
    assert invoke("run", src, "--policy", "p", "-n", 0).exit_code == 2
    assert invoke("run", src, "--policy", "p", "--votes", 0).exit_code == 2
    assert invoke("run", src, "--policy", "p", "--backend", "tgi").exit_code == 2
    result = invoke("run", src, "--policy", "p", "--backend", "openai")
    assert result.exit_code == 2 and "needs --base-url" in result.stderr
    with_candidates = write_jsonl(tmp_path / "c.jsonl", [{"query": "q", "candidates": ["a", "b"]}])
    result = invoke("select", with_candidates, "--judge-template", tmp_path / "missing.toml")
    assert result.exit_code == 2 and "cannot read template" in result.stderr
    monkeypatch.setattr(bon.engines, "vllm_installed", lambda: False)
    result = invoke("run", src, "--policy", "p", "--backend", "vllm")
    assert result.exit_code == 2 and "pip install" in result.stderr and "Traceback" not in result.stderr


def test_engine_failure_is_one_line_exit_1_and_debug_shows_the_traceback(tmp_path, scripted):
    async def broken(request):
        raise EngineError("server http://x (m) cannot be reached")

    scripted.generate = broken
    src = write_jsonl(tmp_path / "q.jsonl", QUERIES[:2])
    result = invoke("run", src, "--policy", "pol")
    assert result.exit_code == 1
    assert result.stderr.strip() == "bon: error: server http://x (m) cannot be reached"
    debug = invoke("run", src, "--policy", "pol", "--debug")
    assert isinstance(debug.exception, EngineError)


def test_policy_and_judge_on_one_model_share_one_engine(tmp_path, scripted):
    src = write_jsonl(tmp_path / "q.jsonl", QUERIES[:2])
    result = invoke("run", src, "--policy", "m", "--judge", "m", "-n", 2, "-q")
    assert result.exit_code == 0
    assert len(scripted.created) == 1
    result = invoke("run", src, "--policy", "p", "--judge", "j", "-n", 2, "-q")
    assert [c.model for c in scripted.created[1:]] == ["p", "j"]  # phased: policy first


def test_help_lists_every_option_with_defaults():
    result = runner.invoke(app, ["run", "--help"], env={"COLUMNS": "250", "TERMINAL_WIDTH": "250"})
    for option in (
        "--policy",
        "--judge",
        "--votes",
        "--max-votes",
        "--seed",
        "--backend",
        "--judge-max-tokens",
        "--base-url",
        "--api-key-env",
        "--query-field",
        "--candidates-field",
        "--concurrency",
    ):
        assert option in result.stdout
    assert "8192" in result.stdout and "Reward-Reasoning/RRM-7B" in result.stdout


def test_import_and_help_load_neither_torch_nor_vllm():
    code = (
        "import sys; from typer.testing import CliRunner; from bon.cli.main import app; "
        "CliRunner().invoke(app, ['run', '--help']); "
        "print(sorted(m for m in ('torch', 'vllm', 'transformers') if m in sys.modules))"
    )
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


@pytest.mark.parametrize(
    "command",
    ["run", "sample", "select", "compare", "eval", "show", "score", "curve", "merge", "status", "pairs", "plan"]
    + ["browse"],
)
def test_help_at_80_columns_prints_every_option_name_whole_with_its_default(command, monkeypatch):
    import click
    from typer import rich_utils

    # As `COLUMNS=80 bon run --help` in a fresh process: Typer reads TERMINAL_WIDTH once, at
    # import, so a width another test set must not stick.
    monkeypatch.setattr(rich_utils, "MAX_WIDTH", None)
    result = runner.invoke(app, [command, "--help"], env={"COLUMNS": "80"})
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert max(len(line) for line in lines) <= 80
    cli_command = typer.main.get_command(app).commands[command]
    for param in cli_command.params:
        if getattr(param, "hidden", False):  # a removed option, parsed only to say it is gone
            continue
        for name in param.opts + param.secondary_opts:
            if name.startswith("--"):
                assert any(name in line.split() for line in lines), f"{name} not printed whole"
        # every option with a value shows its default (flags are off unless given)
        if isinstance(param, click.Option) and not param.is_flag and not param.required:
            assert param.show_default not in (False, None), f"{param.name} shows no default"
    if command == "run":
        for panel in ("Models", "Tournament", "Decoding", "Servers", "vLLM engine", "Batch job", "Input and output"):
            assert f"─ {panel} ─" in result.stdout
        assert "2 × votes" in result.stdout  # not swallowed as markup
        import os
        import subprocess
        import sys

        real = subprocess.run(
            [sys.executable, "-m", "bon", "run", "--help"],
            capture_output=True,
            text=True,
            env={k: v for k, v in os.environ.items() if k != "TERMINAL_WIDTH"} | {"COLUMNS": "80"},
        )
        # what a person at an 80-column terminal sees: the same text, but for the program name
        assert real.stdout.replace("python -m bon run", "root run").split() == result.stdout.split()


def test_a_flag_the_backend_does_not_take_is_a_usage_error(tmp_path, scripted):
    src = write_jsonl(tmp_path / "q.jsonl", QUERIES[:1])
    cases = [
        (["--backend", "openai", "--base-url", "http://127.0.0.1:9/v1", "--dtype", "bfloat16"], "--dtype"),
        (
            ["--backend", "openai", "--base-url", "http://127.0.0.1:9/v1", "--tensor-parallel-size", "2"],
            "--tensor-parallel-size",
        ),
        (["--backend", "vllm", "--base-url", "http://127.0.0.1:9/v1"], "--base-url"),
        (["--backend", "hf", "--no-request-seed"], "--no-request-seed"),  # the flag as it is spelled
        (["--backend", "hf", "--stall-timeout", "5"], "--stall-timeout"),
    ]
    for flags, name in cases:
        result = invoke("run", src, "--policy", "p", *flags)
        assert result.exit_code == 2, (flags, result.output)
        (line,) = result.stderr.strip().splitlines()
        assert line.startswith(f"bon: error: {name} does not apply to the ") and "Traceback" not in result.output
    # a shared flag is fine when one of the roles takes it: here the judge's server
    mixed = invoke(
        "run",
        src,
        "--policy",
        "p",
        "--policy-backend",
        "scripted",
        "--judge-backend",
        "openai",
        "--base-url",
        "http://127.0.0.1:9/v1",
        "--dtype",
        "float16",
    )
    assert mixed.exit_code == 2 and "--dtype does not apply to the openai and scripted backends" in mixed.stderr
