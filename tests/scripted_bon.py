"""`python tests/scripted_bon.py ARGS…` runs the bon CLI with every engine scripted.

For tests that need a real process (signals, SIGKILL, resume) but a deterministic judge.
BON_TEST_LATENCY: seconds per request; BON_TEST_LOG: file that gets one line per request
(its sidecar keys); BON_TEST_FAIL_ON: a query text whose requests fail for that record alone;
BON_TEST_CLOSE_LATENCY: seconds an engine takes to shut down (vLLM's can take several);
BON_TEST_CLOSE_LOG: file that gets "close started" and "close finished" lines.
"""

import asyncio
import json
import os
import sys

import bon.engines
from bon.checkpoint import request_key
from bon.engines.base import RecordError
from bon.engines.scripted import ScriptedEngine


class TestEngine(ScriptedEngine):
    async def generate(self, request):
        fail_on = os.environ.get("BON_TEST_FAIL_ON")
        if fail_on and fail_on in request.messages[-1]["content"]:
            raise RecordError(f"scripted: rejected a request of {fail_on!r}")
        log = os.environ.get("BON_TEST_LOG")
        if log:
            with open(log, "a") as handle:
                handle.write(json.dumps([request_key("policy", request), request_key("judge", request)]) + "\n")
        return await super().generate(request)

    async def close(self):
        note("close started")
        await asyncio.sleep(float(os.environ.get("BON_TEST_CLOSE_LATENCY", "0")))
        note("close finished")


def note(line):
    path = os.environ.get("BON_TEST_CLOSE_LOG")
    if path:
        with open(path, "a") as handle:
            handle.write(line + "\n")


async def create_engine(config):
    latency = float(os.environ.get("BON_TEST_LATENCY", "0"))
    return TestEngine(latency=(lambda request: latency) if latency else None, keep_requests=False)


bon.engines.create_engine = create_engine

if __name__ == "__main__":
    from bon.cli import app

    sys.argv[0] = "bon"
    app()
