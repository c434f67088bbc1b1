"""What the Python API costs per record next to the CLI, on the scripted engine.

The same records (N=8 candidates, 3 votes) judged four ways in one process, CPU time per
record: `bon select` (the CLI, in-process), `bon.run` (the library's batch form),
`judge.select` called once per record (sync: each call hops to bon's background loop) and
`await judge.aselect` in the caller's loop. The engine answers at once, so what is
measured is bon's own work: prompts, bracket, votes, records. Prints ms per record and
each form's ratio to the CLI.

    python benchmarks/api_overhead.py [RECORDS]      (default 400)
    python benchmarks/api_overhead.py --smoke        # 20 records: a second
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

import bon  # noqa: E402
from bon.config import HFOptions  # noqa: E402
from bon.engines import Backend  # noqa: E402
from bon.engines.scripted import ScriptedEngine  # noqa: E402
from bon.plugins import register_backend  # noqa: E402


async def _load(config):
    return ScriptedEngine(keep_requests=False)


register_backend(Backend("scripted", HFOptions, _load, local=True))

# What --smoke needs beyond bon (tests/test_benchmarks.py marks its test with it), and the
# lines it must print: one per form.
SMOKE_NEEDS = ()
FIGURES = (
    r"^  bon select \(CLI\) +\d+\.\d\d ms   ratio to CLI +1\.00$",
    r"^  bon\.run +\d+\.\d\d ms   ratio to CLI +\d+\.\d\d$",
    r"^  judge\.select per record +\d+\.\d\d ms   ratio to CLI +\d+\.\d\d$",
    r"^  judge\.aselect per record +\d+\.\d\d ms   ratio to CLI +\d+\.\d\d$",
)


def records(count: int) -> list[dict]:
    return [
        {
            "id": i,
            "query": f"question {i}",
            "candidates": [f"answer {j} " + "x" * ((i * 7 + j * 13) % 11) for j in range(8)],
        }
        for i in range(count)
    ]


def timed(fn) -> float:
    started = time.process_time()
    fn()
    return time.process_time() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("records", nargs="?", type=int, default=400)
    parser.add_argument("--smoke", action="store_true", help="20 records")
    args = parser.parse_args()
    count = 20 if args.smoke else args.records
    rows = records(count)
    from typer.testing import CliRunner

    from bon.cli.main import app

    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "in.jsonl"
        src.write_text("".join(json.dumps(r) + "\n" for r in rows))

        def cli():
            result = CliRunner().invoke(
                app,
                [
                    "select",
                    str(src),
                    "--votes",
                    "3",
                    "-q",
                    "--backend",
                    "scripted",
                    "-o",
                    str(Path(tmp) / "cli.jsonl"),
                    "--overwrite",
                ],
            )
            assert result.exit_code == 0, result.output

        judge = bon.Judge("j", backend="scripted")

        def library_run():
            assert len(list(bon.run(rows, judge=judge, votes=3))) == count

        def select_each():
            for r in rows:
                judge.select(r["query"], r["candidates"], id=r["id"], votes=3)

        def aselect_each():
            async def go():
                async with bon.Judge("j", backend="scripted") as own:
                    for r in rows:
                        await own.aselect(r["query"], r["candidates"], id=r["id"], votes=3)

            asyncio.run(go())

        cli()  # warm imports and caches once
        figures = {
            name: timed(fn)
            for name, fn in (
                ("bon select (CLI)", cli),
                ("bon.run", library_run),
                ("judge.select per record", select_each),
                ("judge.aselect per record", aselect_each),
            )
        }
        judge.close()
    base = figures["bon select (CLI)"]
    print(f"{count} records × 8 candidates, 3 votes, scripted engine; CPU time per record:")
    for name, seconds in figures.items():
        print(f"  {name:<26} {1000 * seconds / count:6.2f} ms   ratio to CLI {seconds / base:5.2f}")


if __name__ == "__main__":
    main()
