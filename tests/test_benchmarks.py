"""Every script in benchmarks/ runs, at smoke size, and prints its figures (issue 20: benchmarks cannot rot).

The scripts are found, not listed: each `benchmarks/*.py` but run_all.py and `_*.py` helpers is a
benchmark, and runs here as `python benchmarks/NAME.py --smoke` in a process of its own (a tiny
size that takes seconds, through the same code as a full run). A new benchmark is covered the
moment it lands.

A benchmark may declare, at module level (read from its source, never imported here):
- `SMOKE_NEEDS = ("model", "vllm")`: the real parts its smoke run needs, in tests/conftest.py's
  markers, so `make check` deselects it as it does a test that uses the `smollm2` fixture. Left
  out, it is read off the source: one that mentions vLLM or SmolLM2 needs the model and vLLM.
- `FIGURES = (r"regex", ...)`: lines its run must print (re.MULTILINE), one per figure. Left
  out, it must print at least one line with a number in it.
"""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BENCHMARKS = ROOT / "benchmarks"
NOT_BENCHMARKS = {"run_all.py"}  # make bench's driver; `_*.py` files are helpers too
MARKERS = {"model", "vllm", "server", "tmux", "slurm", "root"}  # pyproject.toml's, set by tests/conftest.py
SMOKE_TIMEOUT = 600  # a hang guard, far above what a smoke run needs (seconds; vLLM's start-up the longest)


def benchmark_scripts() -> list[Path]:
    return sorted(
        path for path in BENCHMARKS.glob("*.py") if path.name not in NOT_BENCHMARKS and not path.name.startswith("_")
    )


def declared(source: str, name: str):
    """The literal value of a module-level `NAME = …` in `source`, or None when there is none."""
    for node in ast.parse(source).body:
        if isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(isinstance(t, ast.Name) and t.id == name for t in targets) and node.value is not None:
                return ast.literal_eval(node.value)
    return None


def smoke_needs(source: str) -> tuple[str, ...]:
    needs = declared(source, "SMOKE_NEEDS")
    if needs is not None:
        return tuple(needs)
    return ("model", "vllm") if re.search(r"vllm|smollm2", source, re.IGNORECASE) else ()


def benchmark_params() -> list:
    params = []
    for path in benchmark_scripts():
        needs = smoke_needs(path.read_text())
        params.append(pytest.param(path, needs, id=path.stem, marks=[getattr(pytest.mark, need) for need in needs]))
    return params


def test_the_benchmarks_are_found():
    """The discovery itself: the scripts the README's figures come from are all here, run_all is not."""
    names = {path.name for path in benchmark_scripts()}
    assert {"engine_bench.py", "simulate.py", "answer_aware.py", "memory.py", "api_overhead.py"} <= names
    assert "browse_bench.py" in names and "run_all.py" not in names


@pytest.mark.parametrize(("script", "needs"), benchmark_params())
def test_benchmark_smoke_run_prints_its_figures(script: Path, needs: tuple[str, ...], request):
    source = script.read_text()
    assert "--smoke" in source, f"{script.name} has no --smoke mode: give it one (a tiny size that takes seconds)"
    assert set(needs) <= MARKERS, f"{script.name}: SMOKE_NEEDS {needs} names markers other than {sorted(MARKERS)}"
    if "model" in needs:
        request.getfixturevalue("smollm2")  # the real model: missing is a failure that says `make model`
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_VERBOSITY="error")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    result = subprocess.run(
        [sys.executable, str(script), "--smoke"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=SMOKE_TIMEOUT,
        env=env,
    )
    shown = f"stdout:\n{result.stdout}\nstderr (last 3000 characters):\n{result.stderr[-3000:]}"
    assert result.returncode == 0, f"{script.name} --smoke exited {result.returncode}\n{shown}"
    figures = declared(source, "FIGURES")
    if figures is None:
        assert re.search(r"\d", result.stdout), f"{script.name} --smoke printed no figures\n{shown}"
    else:
        missing = [pattern for pattern in figures if not re.search(pattern, result.stdout, re.MULTILINE)]
        assert not missing, f"{script.name} --smoke did not print lines matching {missing}\n{shown}"
    assert not re.search(r"\bnan\b", result.stdout, re.IGNORECASE), f"{script.name} printed nan\n{shown}"
