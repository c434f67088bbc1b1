"""`python tests/scripted_bon.py ARGS…` runs the bon CLI on a registered `scripted` backend
(the default for model commands that name no backend).

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

from bon.checkpoint import request_key
from bon.config import HFOptions, ServerOptions
from bon.engines import Backend, register_backend
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


register_backend(Backend("scripted", HFOptions, create_engine, local=True))
# The same judge behind server options (--base-url …), for tests of what a run records about servers.
register_backend(Backend("scripted-server", ServerOptions, create_engine, local=False))

if __name__ == "__main__":
    from bon.cli import app

    sys.argv[0] = "bon"
    if sys.argv[1:2] and sys.argv[1] in ("run", "sample", "select", "compare", "eval") and "--backend" not in sys.argv:
        sys.argv += ["--backend", "scripted"]
    app()
