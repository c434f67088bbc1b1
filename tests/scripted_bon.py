"""`python tests/scripted_bon.py ARGS…` runs the bon CLI on a registered `scripted` backend
(the default for model commands that name no backend).

For tests that need a real process (signals, SIGKILL, resume) but a deterministic judge.
BON_TEST_LATENCY: seconds per request; BON_TEST_LOG: file that gets one line per request
(its sidecar keys); BON_TEST_FAIL_ON: a query text whose requests fail for that record alone;
BON_TEST_CLOSE_LATENCY: seconds an engine takes to shut down (vLLM's can take several);
BON_TEST_CLOSE_LOG: file that gets "close started" and "close finished" lines;
BON_TEST_SIGNAL_AT=K (with BON_TEST_SIGNAL, default SIGTERM): the process signals itself
while its K-th request is in flight; BON_TEST_BREAK_AT=K: the K-th request fails as a dead
engine does (EngineError).

Like a real engine, a closed one refuses requests; that, and a model loaded again after its
engine was closed, also print a "scripted:" line on stderr (a run that stops cleanly does neither).
BON_TEST_JUDGE=coin: the judge flips a coin seeded by each request's seed (else it prefers
the longer answer); BON_TEST_SLOW_ON: a text whose requests take BON_TEST_SLOW_LATENCY
seconds, each logged as one line in BON_TEST_SLOW_LOG when it is sent (bon serve's tests).
"""

import asyncio
import itertools
import json
import os
import signal
import sys

from bon.config import HFOptions, ServerOptions
from bon.engines import Backend
from bon.engines.base import EngineError, RecordError
from bon.engines.scripted import ScriptedEngine, prefers_longer, seeded_coin
from bon.plugins import register_backend
from bon.runs.checkpoint import request_key

REQUESTS = itertools.count(1)  # this process's requests, every engine's
CLOSED_MODELS = set()


def env_int(name):
    return int(os.environ.get(name) or 0)


class TestEngine(ScriptedEngine):
    closed = False

    async def generate(self, request):
        if self.closed:  # as the openai client and vLLM's engine do: a closed engine takes no request
            print("scripted: a request after its engine was closed", file=sys.stderr, flush=True)
            raise RuntimeError("Cannot send a request, as the client has been closed.")
        number = next(REQUESTS)
        if number == env_int("BON_TEST_SIGNAL_AT"):  # this request is in flight when the signal lands
            os.kill(os.getpid(), signal.Signals[os.environ.get("BON_TEST_SIGNAL", "SIGTERM")])
        if number == env_int("BON_TEST_BREAK_AT"):
            raise EngineError("scripted: the engine died")
        fail_on = os.environ.get("BON_TEST_FAIL_ON")
        if fail_on and fail_on in request.messages[-1]["content"]:
            raise RecordError(f"scripted: rejected a request of {fail_on!r}")
        slow_on = os.environ.get("BON_TEST_SLOW_ON")
        if slow_on and slow_on in request.messages[-1]["content"]:
            slow_log = os.environ.get("BON_TEST_SLOW_LOG")
            if slow_log:
                with open(slow_log, "a") as handle:
                    handle.write(f"{request.n}\n")
            await asyncio.sleep(float(os.environ.get("BON_TEST_SLOW_LATENCY", "0.5")))
        log = os.environ.get("BON_TEST_LOG")
        if log:
            with open(log, "a") as handle:
                handle.write(json.dumps([request_key("policy", request), request_key("judge", request)]) + "\n")
        return await super().generate(request)

    async def close(self):
        self.closed = True
        CLOSED_MODELS.add(self.model)
        note("close started")
        await asyncio.sleep(float(os.environ.get("BON_TEST_CLOSE_LATENCY", "0")))
        note("close finished")


def note(line):
    path = os.environ.get("BON_TEST_CLOSE_LOG")
    if path:
        with open(path, "a") as handle:
            handle.write(line + "\n")


async def create_engine(config):
    if config.model in CLOSED_MODELS:
        print(f"scripted: {config.model} loaded again after its engine was closed", file=sys.stderr, flush=True)
    latency = float(os.environ.get("BON_TEST_LATENCY", "0"))
    decide = seeded_coin if os.environ.get("BON_TEST_JUDGE") == "coin" else prefers_longer
    engine = TestEngine(decide, latency=(lambda request: latency) if latency else None, keep_requests=False)
    engine.model = config.model
    return engine


register_backend(Backend("scripted", HFOptions, create_engine, local=True))
# The same judge behind server options (--base-url …), for tests of what a run records about servers.
register_backend(Backend("scripted-server", ServerOptions, create_engine, local=False))

if __name__ == "__main__":
    from bon.cli.main import app

    sys.argv[0] = "bon"
    if (
        sys.argv[1:2]
        and sys.argv[1] in ("run", "sample", "select", "compare", "eval", "serve")
        and "--backend" not in sys.argv
    ):
        sys.argv += ["--backend", "scripted"]
    app()
