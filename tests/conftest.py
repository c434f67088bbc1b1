import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bon.config import HFOptions
from bon.engines import Backend
from bon.engines.scripted import ScriptedEngine
from bon.plugins import register_backend

# The bon CLI with the scripted backend registered, in a process of its own (signals, SIGKILL, resume).
SCRIPTED_BON = [sys.executable, str(Path(__file__).parent / "scripted_bon.py")]

SMOLLM2 = Path(os.environ.get("BON_CACHE", Path.home() / ".cache" / "bon")) / "SmolLM2-135M-Instruct"


@pytest.fixture
def scripted():
    """A backend named `scripted` whose every engine is this one (it prefers the longer answer).

    It registers like any backend and counts as local (two local roles take turns), so the
    CLI and the library run exactly their real code paths around it.
    """
    engine = ScriptedEngine()
    created = []

    async def load(config):
        created.append(config)
        return engine

    register_backend(Backend("scripted", HFOptions, load, local=True))
    engine.created = created
    return engine


@pytest.fixture(scope="session")
def vllm_server(smollm2, tmp_path_factory):
    """One real `vllm serve` for the session (see tests/vllm_server.py)."""
    from vllm_server import VllmServer

    server = VllmServer(smollm2, tmp_path_factory.mktemp("vllm-server"))
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def smollm2() -> str:
    """The real SmolLM2-135M-Instruct folder; its absence is a failure, never a skip."""
    assert (SMOLLM2 / "config.json").exists(), (
        f"real model missing at {SMOLLM2}: run `make model` (make test builds it)"
    )
    return str(SMOLLM2)


def write_jsonl(path: Path, rows) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def read_jsonl(text: str):
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def wait_until(condition, what: str, tries: int = 600, every: float = 0.1):
    """Poll `condition` until it returns something truthy, and return that.

    The bound on tries is a hang guard (a broken build must not hang CI), not a speed check:
    it is far above what any healthy run needs.
    """
    for _ in range(tries):
        result = condition()
        if result:
            return result
        time.sleep(every)
    raise AssertionError(f"{what}: never happened")


def scripted_bon(*args, env=None, timeout=120, **kwargs) -> subprocess.CompletedProcess:
    """Run `bon ARGS` on the scripted backend to its end (the timeout is a hang guard)."""
    return subprocess.run(
        SCRIPTED_BON + [str(a) for a in args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=dict(os.environ, **(env or {})),
        **kwargs,
    )


# Signs of a stop that was not clean. The scripted engine (tests/scripted_bon.py) prints
# "… after its engine was closed" for a request on a closed engine and for a model loaded
# again after its close.
UNCLEAN = (
    "Traceback",
    "never retrieved",
    "Exception ignored",
    "Task was destroyed",
    "Fatal Python error",
    "after its engine was closed",
)


def assert_clean(stderr: str) -> None:
    """stderr of a run that ended (however) without a sign of work left running or a crash."""
    found = [line for line in stderr.splitlines() if any(sign in line for sign in UNCLEAN)]
    assert not found, stderr


# Which real parts a test needs, read from the fixtures it uses and the helpers it calls, so that a new
# test is classified without a decorator. `make check` deselects every one of these markers (they are
# declared in pyproject.toml); `make test` runs them all.
NEEDS_FIXTURE = {
    "smollm2": ("model",),
    "vllm_server": ("model", "vllm", "server"),
    "slurm": ("slurm", "root"),
    "small_tmpfs": ("root",),
}
NEEDS_HELPER = {"tmux_screen": ("tmux",)}


def _names_used(code) -> set[str]:
    """Global names a function's code refers to, nested functions and lambdas included."""
    names = set(code.co_names)
    for const in code.co_consts:
        if hasattr(const, "co_names"):
            names |= _names_used(const)
    return names


def pytest_collection_modifyitems(config, items):
    for item in items:
        needs = {mark for fixture in getattr(item, "fixturenames", ()) for mark in NEEDS_FIXTURE.get(fixture, ())}
        function = getattr(item, "function", None)
        if function is not None and hasattr(function, "__code__"):
            used = _names_used(function.__code__)
            needs |= {mark for helper, marks in NEEDS_HELPER.items() if helper in used for mark in marks}
        for mark in sorted(needs - {m.name for m in item.iter_markers()}):
            item.add_marker(mark)


def start_bon(*args, env=None, **popen):
    """A real `bon` process on the scripted backend (tests/scripted_bon.py), its streams piped."""
    return subprocess.Popen(
        SCRIPTED_BON + [str(a) for a in args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=dict(os.environ, **(env or {})),
        **popen,
    )


def wait_for_lines(path: Path, count: int, process):
    """Wait until `path` holds `count` whole lines while `process` still runs."""

    def reached():
        assert process.poll() is None, process.stderr.read()
        return path.exists() and path.read_bytes().count(b"\n") >= count

    wait_until(reached, f"{path.name} to reach {count} lines")
