"""`bon serve`: best-of-N selection behind an OpenAI-compatible HTTP endpoint.

A server is the library behind HTTP (the way `vllm serve` wraps `AsyncLLM`): every request
becomes one record of a long-lived `bon.runs.session.Session`, which shares the policy
and judge engines across requests; the answer is the tournament's winner as an OpenAI
`ChatCompletion` (or `Completion`), with the bon record in an extension field `bon`.

- `protocol`: OpenAI request bodies -> a record and its settings; answers built from the
  openai package's own types;
- `service`: the server without HTTP: admission (concurrency, queue, drain), one request
  through the session, usage, traces, health;
- `metrics`: the Prometheus metrics of one app;
- `asgi`: the ASGI app factory (FastAPI): routes, auth, streaming, client disconnects;
- `process`: the app under uvicorn with bon's signal handling (drain), for `bon serve`.

May import `bon.runs` and everything below it, never the command line or the views.
FastAPI, uvicorn and prometheus_client (the `serve` extra) are imported when an app is made,
not with this package.
"""

from __future__ import annotations

from typing import Any

__all__ = ["app", "create_app"]


def create_app(policy: Any = None, judge: Any = None, **settings: Any) -> Any:
    """The ASGI app serving best-of-N with `policy` and `judge` (`bon.Policy`, `bon.Judge`).

    Settings are keywords: ServeConfig's (served_model_name, max_concurrency, max_queue,
    server_key_env, traces, limit_n, limit_votes, limit_max_tokens, keep_alive), `n`, and
    TournamentConfig's (votes, max_votes, seed, strategy, max_pairs, early_stop,
    group_by_answer) as the defaults requests may override. The engines load when the app
    starts (its lifespan) and close when it stops. Mount it in a FastAPI/Starlette app or run
    it with any ASGI server.
    """
    from bon.serve.asgi import create_app as make

    return make(policy=policy, judge=judge, **settings)


app = create_app
