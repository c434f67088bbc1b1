"""`bon serve`: the command over `bon.serve` — flags -> roles and settings -> the app -> uvicorn.

Its options are the run's model, tournament and backend groups plus the Server panel,
generated from `ServeConfig` in bon/config.py.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from typing import Any

import typer

from bon.cli.args import (
    BACKEND,
    BACKEND_FLAGS,
    DEBUG,
    JOB,
    JUDGE,
    JUDGE_ENGINE_ARGS,
    POLICY,
    POLICY_ENGINE_ARGS,
    QUIET,
    ROLE_SERVERS,
    TOURNAMENT_FLAGS,
    flag,
    given,
    make_roles,
    options,
    tournament_settings,
)
from bon.cli.failures import fail
from bon.config import SERVER, ServeConfig, TournamentConfig, from_values

SERVE_OPTIONS = options(ServeConfig)
SERVE_FLAGS = [
    *SERVE_OPTIONS.values(),
    # Internal (tests watch keep-alives without waiting 10 s): seconds between SSE comments.
    flag("keep_alive", float, ServeConfig.keep_alive, "Seconds between SSE keep-alive comments.", SERVER, hidden=True),
]
VERBOSE = [
    flag(
        "verbose",
        bool,
        False,
        "Leave the engine library's own start-up and shutdown output on stderr.",
        JOB,
        "--verbose",
    )
]
GROUPS = [
    POLICY,
    JUDGE,
    BACKEND,
    ROLE_SERVERS,
    TOURNAMENT_FLAGS,
    BACKEND_FLAGS,
    POLICY_ENGINE_ARGS,
    JUDGE_ENGINE_ARGS,
    SERVE_FLAGS,
    VERBOSE,
    QUIET,
    DEBUG,
]


def _bon_log(quiet: bool) -> logging.Logger:
    log = logging.getLogger("bon")
    log.propagate = False
    if not log.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("bon: %(message)s"))
        log.addHandler(handler)
    log.setLevel(logging.WARNING if quiet else logging.INFO)
    return log


def serve(ctx: typer.Context, params: dict[str, Any]) -> None:
    """Serve best-of-N behind an OpenAI-compatible endpoint: each request's answer is the winner of its N candidates.

    POST /v1/chat/completions and /v1/completions (stream too), GET /v1/models, /health, /metrics.

    A request's `bon` object may set n, votes, strategy, group_by_answer and seed (within the --limit-* options), and trace (false: no record in the answer).
    """  # noqa: E501 - Typer keeps a docstring's line breaks: one line per paragraph
    from bon.serve.protocol import check_installed

    try:
        check_installed()
        log = _bon_log(params["quiet"])
        set_here = given(ctx)
        config = ServeConfig(**from_values(ServeConfig, params))
        if "host" not in set_here and not config.server_key_env:
            log.info("no --server-key-env: listening on 127.0.0.1 only (--host to listen elsewhere)")
        elif not config.server_key_env:
            log.warning("no --server-key-env: anyone who reaches %s may use the models", config.host)
        policy, judge = make_roles(params, set_here, True, True, {"verbose": params["verbose"], "log_file": None})
        tournament = tournament_settings(params)
        from bon.serve import create_app
        from bon.serve.process import serve as run_server

        settings = {f: getattr(tournament, f) for f in TournamentConfig.__dataclass_fields__}
        server_settings = {f: getattr(config, f) for f in ServeConfig.__dataclass_fields__}
        server_settings["keep_alive"] = params["keep_alive"]
        app = create_app(policy=policy, judge=judge, n=params["n"], **settings, **server_settings)

        def ready(port: int) -> None:
            host = f"[{config.host}]" if ":" in config.host else config.host
            log.info(
                "serving %s (policy %s, judge %s) at http://%s:%d/v1",
                config.served_model_name,
                policy.config.model,
                judge.config.model,
                host,
                port,
            )

        received = asyncio.run(run_server(app, config.host, config.port, config.drain_timeout, ready))
    except Exception as exc:
        fail(exc, params["debug"])
    if received:
        log.info("stopped")
