"""A third-party plug-in, pip-installed into a venv of its own, used from the command line.

tests/fixtures/bon_plugin_demo declares a backend (`canned`) and a strategy (`ladder`) in
the entry-point groups bon.backends and bon.strategies. Nothing in bon names them: if bon
found them any other way than through the entry points, or if a view asked a strategy's
name instead of the strategy, these commands would fail.
"""

from __future__ import annotations

import json
import os
import site
import subprocess
import sys
import venv
from pathlib import Path

import pytest

from conftest import read_jsonl, write_jsonl

FIXTURE = Path(__file__).parent / "fixtures" / "bon_plugin_demo"


@pytest.fixture(scope="module")
def plugin_python(tmp_path_factory) -> Path:
    """A new venv that sees bon (and its dependencies) from this one, with the plug-in
    installed by pip from its source folder, as a user would."""
    root = tmp_path_factory.mktemp("plugin-venv")
    venv.create(root, with_pip=True)
    python = root / "bin" / "python"
    packages = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    # This venv's packages (bon and its dependencies) are visible to the new one; addsitedir
    # also runs their own .pth files (bon's editable install is one).
    Path(packages, "outer.pth").write_text(
        f"import site; {'; '.join(f'site.addsitedir({p!r})' for p in site.getsitepackages())}\n"
    )
    # Built as a wheel here (this venv has a current setuptools, and no index is needed),
    # then installed by the new venv's own pip.
    wheels = root / "wheels"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "-w",
            str(wheels),
            str(FIXTURE),
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    (wheel,) = wheels.glob("bon_plugin_demo-*.whl")
    subprocess.run(
        [python, "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)],
        check=True,
        capture_output=True,
        text=True,
    )
    return python


def bon(python: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = os.environ | {"COLUMNS": "250"}  # help lines unwrapped
    result = subprocess.run(
        [str(python), "-m", "bon", *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=300
    )
    assert result.returncode == 0, result.stderr
    return result


def test_a_pip_installed_plugin_runs_through_every_command(plugin_python, tmp_path):
    listed = [json.loads(line) for line in bon(plugin_python, "plugins", "--json", cwd=tmp_path).stdout.splitlines()]
    mine = {(p["kind"], p["name"]): p for p in listed if p["package"] == "bon-plugin-demo"}
    assert set(mine) == {("backend", "canned"), ("strategy", "ladder")}
    assert {p["version"] for p in mine.values()} == {"0.3.1"} and not any(p["error"] for p in listed)
    assert "ladder: the champion meets each next candidate" in bon(plugin_python, "run", "--help", cwd=tmp_path).stdout

    queries = tmp_path / "q.jsonl"
    write_jsonl(queries, [{"id": f"q{i}", "query": f"Question {i}?"} for i in range(3)])
    # The plug-in backend's own option is generated from its declaration like bon's are.
    bon(
        plugin_python,
        "run",
        str(queries),
        "-o",
        "out.jsonl",
        "--backend",
        "canned",
        "--policy",
        "p",
        "--judge",
        "j",
        "--strategy",
        "ladder",
        "-n",
        "4",
        "--votes",
        "3",
        "--canned-prefix",
        "Surely: ",
        "-q",
        cwd=tmp_path,
    )
    records = read_jsonl((tmp_path / "out.jsonl").read_text())
    assert [r["id"] for r in records] == ["q0", "q1", "q2"]
    for record in records:
        assert record["candidates"] == [f"Surely: The answer is {k}." for k in range(4)]
        assert record["best_index"] == 3  # the canned judge prefers the larger number, in either order
        assert record["tournament"]["strategy"] == "ladder"
        assert [len(r) for r in record["tournament"]["rounds"]] == [1, 1, 1]  # n-1 matches, one a round
        assert all(
            m["decided_by"] == "majority" and len(m["votes"]) == 3 for r in record["tournament"]["rounds"] for m in r
        )

    summary = json.loads(bon(plugin_python, "show", "out.jsonl", "--json", cwd=tmp_path).stdout)
    assert summary["records"] == 3 and summary["judged_matches"] == 9 and summary["judge_samples"] == 27
    tree = bon(plugin_python, "show", "out.jsonl", "--id", "q1", "--full", cwd=tmp_path).stdout
    assert "ladder" in tree and tree.count("\\boxed{Assistant") == 9

    pairs = [
        json.loads(line)
        for line in bon(plugin_python, "pairs", "out.jsonl", "--mode", "best-vs-rest", cwd=tmp_path).stdout.splitlines()
    ]
    assert len(pairs) == 9 and {p["chosen_index"] for p in pairs} == {3}
    assert {p["rejected_index"] for p in pairs} == {0, 1, 2} and all(p["margin"] == 1.0 for p in pairs)
    worst = [
        json.loads(line)
        for line in bon(
            plugin_python, "pairs", "out.jsonl", "--mode", "best-vs-worst", cwd=tmp_path
        ).stdout.splitlines()
    ]
    assert len(worst) == 3 and all(p["chosen_index"] == 3 for p in worst)

    plan = json.loads(
        bon(plugin_python, "plan", str(queries), "--strategy", "ladder", "-n", "4", "--json", cwd=tmp_path).stdout
    )
    assert plan["matches"] == 9 and plan["judge_samples"]["usual"] == 27


def test_an_unknown_strategy_names_the_installed_ones(tmp_path):
    write_jsonl(tmp_path / "q.jsonl", [{"query": "q", "candidates": ["a", "b"]}])
    result = subprocess.run(
        [sys.executable, "-m", "bon", "plan", str(tmp_path / "q.jsonl"), "--strategy", "nope"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2 and "nope" in result.stderr and "knockout" in result.stderr
    assert "Traceback" not in result.stderr
