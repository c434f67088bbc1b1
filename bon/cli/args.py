"""The command line's options: generated from the settings in bon/config.py, composed into the
groups commands are built from; and how the options given become the library's Policy and Judge.

Like vLLM's `EngineArgs.add_cli_args`/`from_cli_args`: a setting's name, type, default, help
and panel are declared once, on its config field; `options(cls)` makes the options, and
`config.from_values` rebuilds the settings from what was parsed. What is declared here is
only what belongs to the command line itself (which model, which backend, --json, --debug)
and how groups compose. Names are a contract: users script them.
"""

from __future__ import annotations

import inspect
import json
import typing
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeAlias

import typer

from bon import config as defaults
from bon.config import (
    DECODING,
    IO,
    JOB,
    MODELS,
    SERVERS,
    STRATEGIES,
    TOURNAMENT,
    VLLM,
    JudgeSampling,
    PolicySampling,
    RunConfig,
    ServerOptions,
    Setting,
    TournamentConfig,
    VLLMOptions,
    declared,
    default_of,
    from_values,
    option_names,
)
from bon.errors import UsageError

__all__ = ["DECODING", "IO", "JOB", "MODELS", "SERVERS", "TOURNAMENT", "VLLM"]


@dataclass(frozen=True)
class Flag:
    name: str  # the Python parameter (and, dashed, the option) name
    annotation: Any  # Annotated[type, typer.Option(...)] or typer.Argument
    default: Any


def flag(
    name: str, type_: Any, default: Any, help: str, panel: str, *decls: str, show: str | bool = True, **kw: Any
) -> Flag:
    """An option; `show` is the default as the help prints it (a phrase where the value is None)."""
    return Flag(
        name, Annotated[type_, typer.Option(*decls, help=help, rich_help_panel=panel, show_default=show, **kw)], default
    )


def argument(name: str, help: str) -> Flag:
    return Flag(name, Annotated[str, typer.Argument(help=help, show_default=False)], inspect.Parameter.empty)


def required(name: str, help: str, panel: str) -> Flag:
    return Flag(
        name,
        Annotated[str, typer.Option(help=help, rich_help_panel=panel, show_default=False)],
        inspect.Parameter.empty,
    )


# ---- options generated from the settings' declarations ----

_choices: dict[tuple[str, ...], type[Enum]] = {}


def choice_value(value: Any) -> Any:
    """A choice option's value as the library takes it (the Enum member's text)."""
    return getattr(value, "value", value)


def choice_enum(name: str, values: tuple[str, ...]) -> type[Enum]:
    """A str Enum Typer shows as a choice (one class per set of values, so equal choices compare equal)."""
    if values not in _choices:
        _choices[values] = Enum(name, {v: v for v in values}, type=str)  # type: ignore[assignment]
    return _choices[values]


def _values_of(spec: Setting) -> tuple[str, ...] | None:
    if spec.choices == STRATEGIES:
        from bon.plugins import strategies

        return tuple(s.name for s in strategies())
    return spec.choices  # type: ignore[return-value]


def _help_of(spec: Setting) -> str:
    if "{strategies}" not in spec.help:
        return spec.help
    from bon.plugins import strategies

    return spec.help.format(strategies="; ".join(f"{s.name}: {s.summary}" for s in strategies()))


def _backend_names() -> str:
    """The registered backends as help lists them: "vllm, openai or hf" (plug-ins' too)."""
    from bon.plugins import backends

    names = [b.name for b in backends()]
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"


def options(cls: type, prefix: str = "") -> dict[str, Flag]:
    """The options a settings dataclass declares, by field name (`prefix` names a role's: policy_)."""
    hints = typing.get_type_hints(cls)
    out = {}
    for name, (field_, spec) in declared(cls).items():
        default = default_of(field_)
        type_: Any = spec.cli_type or hints[name]
        if spec.negated:  # on by default: the option turns it off
            out[name] = flag(f"{prefix}no_{name}", bool, False, _help_of(spec), spec.panel, *spec.decls, show=spec.show)
            continue
        values = _values_of(spec)
        if values is not None:
            enum = choice_enum(name.title().replace("_", ""), values)
            type_, default = enum | None if default is None else enum, None if default is None else enum(default)
        elif spec.cli_type is not None and default in ((), None):
            type_, default = spec.cli_type | None, None
        extra = {k: getattr(spec, k) for k in ("min", "max", "metavar") if getattr(spec, k) is not None}
        out[name] = flag(
            prefix + name, type_, default, _help_of(spec), spec.panel, *spec.decls, show=spec.show, **extra
        )
    return out


RUN, TOURNAMENT_OPTIONS = options(RunConfig), options(TournamentConfig)
POLICY_DECODING, JUDGE_DECODING = (
    options(PolicySampling, PolicySampling.PREFIX),
    options(JudgeSampling, JudgeSampling.PREFIX),
)
SERVER_OPTIONS, VLLM_OPTIONS = options(ServerOptions), options(VLLMOptions)

# Options the commands that read outputs (bon/cli/outputs.py) take too.
QUERY_FIELD, CANDIDATES_FIELD, OVERWRITE = RUN["query_field"], RUN["candidates_field"], RUN["overwrite"]
if TYPE_CHECKING:  # Typer reads the generated choices; the type checker sees their values' type
    AnswerCheck: TypeAlias = str
    OnBadLine: TypeAlias = str
else:
    AnswerCheck = choice_enum("GroupByAnswer", defaults.ANSWER_CHECKS)
    OnBadLine = choice_enum("OnBadLine", ("fail", "skip"))

INPUT = [
    argument("input", "JSONL file (- for stdin), Parquet file, saved Hugging Face dataset folder, or hf:ORG/NAME.")
]
IO_FLAGS = [RUN[name] for name in ("output", "query_field", "candidates_field", "split", "config", "on_bad_line")] + [
    flag(
        "rejects",
        Path | None,
        None,
        "With --on-bad-line skip: write rejected lines with their reasons here.",
        IO,
        show=False,
    ),
]
BACKEND = [
    flag(
        "backend",
        str | None,
        None,
        f"{_backend_names()}, for both roles. Default: openai with a base URL; "
        "else vllm if installed with a GPU; else hf.",
        MODELS,
        show="auto",
    )
]
POLICY = [
    required("policy", "Policy model: Hugging Face id, local folder, or a server's model name.", MODELS),
    RUN["n"],
    *POLICY_DECODING.values(),
    flag(
        "system",
        str | None,
        None,
        "System prompt for the policy (records with their own system message keep it).",
        DECODING,
        show="none",
    ),
]
JUDGE = [
    flag(
        "judge",
        str,
        defaults.DEFAULT_JUDGE,
        "Judge model (an RRM): Hugging Face id, local folder, or a server's model name.",
        MODELS,
    ),
    flag(
        "judge_template",
        Path | None,
        None,
        "Custom judge prompt: TOML with system/user, placeholders {question} {answer1} {answer2}.",
        MODELS,
        show="the RRM's",
    ),
    *JUDGE_DECODING.values(),
]
VOTES = [TOURNAMENT_OPTIONS["votes"], TOURNAMENT_OPTIONS["max_votes"]]
SEED = [TOURNAMENT_OPTIONS["seed"]]
TOURNAMENT_FLAGS = list(TOURNAMENT_OPTIONS.values())
ROLE_SERVERS = [
    flag("policy_backend", str | None, None, "Backend for the policy (overrides --backend).", MODELS, show="--backend"),
    flag("judge_backend", str | None, None, "Backend for the judge (overrides --backend).", MODELS, show="--backend"),
    flag(
        "policy_base_url",
        list[str] | None,
        None,
        "Server for the policy (overrides --base-url).",
        SERVERS,
        show="--base-url",
        metavar="URL",
    ),
    flag(
        "judge_base_url",
        list[str] | None,
        None,
        "Server for the judge (overrides --base-url).",
        SERVERS,
        show="--base-url",
        metavar="URL",
    ),
    flag(
        "policy_api_key_env",
        str | None,
        None,
        "Variable holding the policy server's API key (overrides --api-key-env).",
        SERVERS,
        show="--api-key-env",
        metavar="NAME",
    ),
    flag(
        "judge_api_key_env",
        str | None,
        None,
        "Variable holding the judge server's API key (overrides --api-key-env).",
        SERVERS,
        show="--api-key-env",
        metavar="NAME",
    ),
]
# A second, stronger judge for the matches the judge's votes leave in doubt: its backend
# options are named like the judge's (--escalate-base-url beside --judge-base-url).
ESCALATE = [
    flag(
        "escalate_judge",
        str | None,
        None,
        "A stronger judge (e.g. RRM-32B) for every match whose --judge votes do not all agree; "
        "it decides those within the match's vote budget. Needs --votes 2 or more.",
        MODELS,
        show="none",
        metavar="MODEL",
    ),
    flag(
        "escalate_backend",
        str | None,
        None,
        "Backend for the escalation judge (overrides --backend).",
        MODELS,
        show="--backend",
    ),
    flag(
        "escalate_base_url",
        list[str] | None,
        None,
        "Server for the escalation judge (overrides --base-url).",
        SERVERS,
        show="--base-url",
        metavar="URL",
    ),
    flag(
        "escalate_api_key_env",
        str | None,
        None,
        "Variable holding the escalation judge server's API key (overrides --api-key-env).",
        SERVERS,
        show="--api-key-env",
        metavar="NAME",
    ),
    flag(
        "escalate_engine_args",
        str | None,
        None,
        "Any other engine argument for the escalation judge, as JSON in vLLM's names.",
        VLLM,
        show="none",
    ),
]
# Options bon no longer has, still parsed so that an old script gets one line saying what
# replaced them (exit 2) rather than a usage box, or a silent change of behaviour.
REMOVED = {
    "max_retries": "--max-retries was removed: bon retries for as long as an outage lasts, up to "
    "--give-up-after SECONDS (600 by default); drop the flag",
}
REMOVED_FLAGS = [flag(name, str | None, None, "Removed.", SERVERS, hidden=True) for name in REMOVED]
SERVER_FLAGS = list(SERVER_OPTIONS.values()) + REMOVED_FLAGS
VLLM_FLAGS = list(VLLM_OPTIONS.values())


def _plugin_backend_flags() -> list[Flag]:
    """The options other backends (plug-ins') declare, each under its own panel, once."""
    from bon.plugins import backends

    offered, out = set(SERVER_OPTIONS) | set(VLLM_OPTIONS), []
    for backend in backends():
        for name, option in options(backend.options).items():
            if name not in offered:
                offered.add(name)
                out.append(option)
    return out


# Loading the plug-ins here is what lets `--backend NAME` of a plug-in take its own options.
BACKEND_FLAGS = SERVER_FLAGS + VLLM_FLAGS + _plugin_backend_flags()
POLICY_ENGINE_ARGS = [
    flag(
        "policy_engine_args",
        str | None,
        None,
        "Any other engine argument for the policy, as JSON in vLLM's names, e.g. '{\"swap_space\": 8}'.",
        VLLM,
        show="none",
    )
]
JUDGE_ENGINE_ARGS = [
    flag(
        "judge_engine_args",
        str | None,
        None,
        "Any other engine argument for the judge, as JSON in vLLM's names.",
        VLLM,
        show="none",
    )
]
CONCURRENCY = [RUN["concurrency"]]
QUIET = [flag("quiet", bool, False, "No progress and no summary on stderr.", JOB, "--quiet", "-q")]
DEBUG = [flag("debug", bool, False, "Show tracebacks on errors.", JOB, "--debug")]
JOB_FLAGS = (
    CONCURRENCY
    + [
        RUN["resume"],
        OVERWRITE,
        RUN["shard"],
        flag(
            "shards",
            int | None,
            None,
            "With --shard auto in a Kubernetes Indexed Job: the Job's completions.",
            JOB,
            min=1,
            show="none",
        ),
        flag(
            "log_every",
            float,
            defaults.DEFAULT_LOG_EVERY,
            "Seconds between status lines when stderr is not a terminal (0: "
            "none); the manifest's progress follows the same cadence.",
            JOB,
            min=0.0,
        ),
        flag(
            "verbose",
            bool,
            False,
            "Leave the engine library's own start-up and shutdown output on stderr (else it "
            "goes to OUTPUT.engine.log, or nowhere).",
            JOB,
            "--verbose",
        ),
    ]
    + QUIET
    + DEBUG
)
JSON = [flag("as_json", bool, False, "Print the result as JSON.", IO, "--json")]


def handler(*groups: list[Flag]) -> Callable:
    """Make `body(ctx, params)` a command function taking the options of `groups`.

    The signature is built from the declarations (Typer reads it like a written one), so a
    group's options are declared once however many commands take them."""
    flags = [f for group in groups for f in group]

    def wrap(body: Callable[[typer.Context, dict[str, Any]], None]) -> Callable:
        def command_function(ctx: typer.Context, **params: Any) -> None:
            body(ctx, params)

        command_function.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
            [inspect.Parameter("ctx", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=typer.Context)]
            + [
                inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=f.default, annotation=f.annotation)
                for f in flags
            ]
        )
        command_function.__doc__, command_function.__name__ = body.__doc__, body.__name__
        return command_function

    return wrap


def command(app: typer.Typer, name: str, *groups: list[Flag]) -> Callable:
    """Register `body(ctx, params)` as command `name` taking the options of `groups`."""

    def register(body: Callable[[typer.Context, dict[str, Any]], None]) -> Callable:
        app.command(name)(handler(*groups)(body))
        return body

    return register


def command_line(ctx: typer.Context) -> list[str]:
    """The command as the user gave it (arguments, then the options set), rebuilt from what
    was parsed — not from sys.argv, which is another program's when bon is called in-process."""
    words, set_here = [ctx.info_name or ""], given(ctx)
    for param in ctx.command.params:
        if param.name not in set_here:
            continue
        value = ctx.params[param.name]
        if param.param_type_name == "argument":
            words.append(str(value))
            continue
        name = param.opts[0]  # as declared first: -o, -n, --quiet
        if getattr(param, "is_flag", False):
            words += [name] if value else []
            continue
        for item in value if isinstance(value, (list, tuple)) else [value]:
            words += [name, str(item.value if isinstance(item, Enum) else item)]
    return words


# ---- the options given -> the library's roles ----


def given(ctx: typer.Context) -> set[str]:
    """The parameters set on the command line (or by environment), not left at their defaults."""
    # By the enum's name: Typer may carry its own copy of click's ParameterSource.
    return {
        name
        for name in ctx.params
        if getattr(ctx.get_parameter_source(name), "name", "DEFAULT") in ("COMMANDLINE", "ENVIRONMENT", "PROMPT")
    }


def _backend_option_names() -> tuple[list[str], set[str]]:
    """Every backend option a flag of the same name sets, over every registered backend
    (plug-ins' too), and the ones that are on unless turned off (--no-NAME)."""
    from bon.plugins import backends

    shared, negative = set(), set()
    for backend in backends():
        shared |= set(option_names(backend.options))
        negative |= {f"no_{name}" for name, (_, spec) in declared(backend.options).items() if spec.negated}
    return sorted(shared - {"engine_args"}), negative  # engine_args comes per role, as JSON


def role_options(params: dict, given: set[str], role: str) -> tuple[str | None, dict[str, Any]]:
    """A role's backend (None: the library's default) and the backend options given for it:
    a role's own flag (--judge-base-url) wins over the shared one (--base-url)."""
    for name in REMOVED.keys() & given:
        raise UsageError(REMOVED[name])
    chosen: dict[str, Any] = {}
    shared_options, negative_flags = _backend_option_names()
    for name in shared_options:
        for key in (f"{role}_{name}", name):
            if key in given:
                value = params[key]
                chosen[name] = tuple(value) if isinstance(value, list) else value
                break
    for negative in negative_flags & given:  # --no-prefix-caching, --no-request-seed
        chosen[negative.removeprefix("no_")] = False
    engine_args = params.get(f"{role}_engine_args")
    if engine_args:
        try:
            chosen["engine_args"] = json.loads(engine_args)
        except ValueError as exc:
            raise UsageError(f"--{role}-engine-args is not JSON: {exc}") from None
        if not isinstance(chosen["engine_args"], dict):
            raise UsageError(f"--{role}-engine-args must be a JSON object of vLLM engine arguments")
    return params.get(f"{role}_backend") or params.get("backend"), chosen


def applicable(backend: str | None, options: dict[str, Any]) -> dict[str, Any]:
    from bon.engines import default_backend
    from bon.plugins import get_backend

    name = backend or default_backend(options.get("base_url"))
    takes = option_names(get_backend(name).options)
    return {k: v for k, v in options.items() if k in takes}


def make_roles(params: dict, given: set[str], sample: bool, select: bool, engine: dict):
    """The Policy and Judge the flags describe. A shared flag goes to each role whose backend
    takes it; one that no role's backend takes is a usage error (not silently ignored)."""
    from bon.plugins import option_flag
    from bon.runs.roles import Policy as PolicyRole

    wanted = [role for role, on in (("policy", sample), ("judge", select)) if on]
    resolved = {role: role_options(params, given, role) for role in wanted}
    shared_options, negative_flags = _backend_option_names()
    shared = {name for name in shared_options if name in given} | {
        f.removeprefix("no_") for f in negative_flags & given
    }
    if len(wanted) > 1:  # each role takes the shared flags its backend knows
        for role, (backend, options) in resolved.items():
            own = {k: v for k, v in options.items() if f"{role}_{k}" in given or k == "engine_args"}
            resolved[role] = (backend, own | applicable(backend, {k: v for k, v in options.items() if k not in own}))
        for name in shared:
            if not any(name in options for _, options in resolved.values()):
                backends = sorted({b or "default" for b, _ in resolved.values()})
                raise UsageError(
                    f"{option_flag(name)} does not apply to the {' and '.join(backends)} "
                    f"backend{'s' if len(backends) > 1 else ''}"
                )
    roles = {}
    if sample:
        backend, options = resolved["policy"]
        roles["policy"] = PolicyRole(
            params["policy"],
            backend,
            seed=params["seed"],
            **engine,
            **decoding(params, PolicySampling),
            system=params["system"],
            **options,
        )
    if select:
        backend, options = resolved["judge"]
        escalate = None
        if params.get("escalate_judge"):
            escalate_backend, escalate_options = role_options(params, given, "escalate")
            own = {k: v for k, v in escalate_options.items() if f"escalate_{k}" in given or k == "engine_args"}
            shared_given = {k: v for k, v in escalate_options.items() if k not in own}
            escalate = judge_role(
                params,
                escalate_backend,
                own | applicable(escalate_backend, shared_given),
                engine,
                model=params["escalate_judge"],
            )
        roles["judge"] = judge_role(params, backend, options, engine, escalate=escalate)
    return roles.get("policy"), roles.get("judge")


def judge_role(params: dict, backend: str | None, options: dict, engine: dict, model: str | None = None, escalate=None):
    """The judge the flags describe (`model`: another model with the judge's decoding and
    template, as the escalation judge is)."""
    from bon.runs.roles import Judge as JudgeRole

    return JudgeRole(
        model or params["judge"],
        backend,
        seed=params["seed"],
        **engine,
        **decoding(params, JudgeSampling),
        template=params["judge_template"],
        escalate=escalate,
        **options,
    )


def judge_from_flags(params: dict, given: set[str]):
    backend, options = role_options(params, given, "judge")
    return judge_role(params, backend, options, {})


# ---- the options given -> the library's settings ----


def decoding(params: dict, sampling: type[PolicySampling] | type[JudgeSampling]) -> dict[str, Any]:
    """A role's decoding keywords from its prefixed options (--judge-temperature: temperature)."""
    return {name: params[sampling.PREFIX + name] for name in declared(sampling)}


def tournament_settings(params: dict) -> TournamentConfig:
    """The tournament the options describe, checked as the library checks its keywords."""
    from bon.runs.roles import tournament_config

    return tournament_config(**from_values(TournamentConfig, params))


def run_settings(params: dict) -> RunConfig:
    from bon.runs.shards import parse_shard

    values = dict(params)
    if "shard" in values:  # the option's text (I/N or auto) -> (I, N)
        values["shard"] = parse_shard(values["shard"], values.get("shards"))
    return RunConfig(**from_values(RunConfig, values))
