"""transformers backend: a local folder or hub id, on CPU or CUDA.

Requests that arrive while a batch runs are gathered into the next one (left padding,
the model's chat template, one row per sample), so concurrent tournaments share batches
without knowing about each other.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

from bon.config import EngineConfig
from bon.engines.base import (
    BackendUnavailable,
    Completion,
    Engine,
    EngineError,
    Generation,
    GenerationRequest,
    chat_prompt_ids,
)
from bon.tasks import settle
from bon.tournament.seeds import derive_seed

log = logging.getLogger("bon")  # the CLI shows bon's INFO lines on stderr ("bon: …")


@dataclass
class _Pending:
    request: GenerationRequest
    future: asyncio.Future


class HFEngine(Engine):
    def __init__(self, config: EngineConfig, tokenizer, model, device: str):
        self.name = f"hf:{config.model}"
        self.tokenizer, self.model, self.device = tokenizer, model, device
        self.max_batch_rows = config.options.max_batch_rows
        self._pending: list[_Pending] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wakeup: asyncio.Event | None = None
        self._worker: asyncio.Task | None = None
        self.context_limit = getattr(model.config, "max_position_embeddings", None)
        eos = model.generation_config.eos_token_id
        self._eos = set(eos if isinstance(eos, list) else [eos]) | {tokenizer.eos_token_id}

    @classmethod
    async def load(cls, config: EngineConfig) -> HFEngine:
        return await asyncio.to_thread(cls._load, config)

    @classmethod
    def _load(cls, config: EngineConfig) -> HFEngine:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer
        from transformers.utils import logging as hf_logging

        if not config.verbose:  # stderr holds bon's own lines: no weight-loading bars
            hf_logging.disable_progress_bar()

        started = time.monotonic()
        device = "cuda" if torch.cuda.is_available() else "cpu"
        try:
            tokenizer = AutoTokenizer.from_pretrained(config.model)
            # CPUs run float32 fastest; on a GPU take the checkpoint's own dtype.
            dtype = "auto" if device == "cuda" else torch.float32
            model = AutoModelForCausalLM.from_pretrained(config.model, dtype=dtype).to(device).eval()
        except (OSError, ValueError) as exc:
            raise BackendUnavailable(f"cannot load model {config.model!r}: {str(exc).splitlines()[0]}") from None
        tokenizer.padding_side = "left"
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        log.info(
            "%s loaded on hf (%s, %s) in %.1f s",
            config.model,
            device,
            str(model.dtype).removeprefix("torch."),
            time.monotonic() - started,
        )
        return cls(config, tokenizer, model, device)

    def count_prompt_tokens(self, messages: list[dict[str, str]]) -> int:
        return len(chat_prompt_ids(self.tokenizer, messages))

    async def generate(self, request: GenerationRequest) -> Generation:
        loop = asyncio.get_running_loop()
        if loop is not self._loop:  # loaded in a thread; may serve more than one event loop in its life
            self._loop, self._wakeup, self._worker = loop, asyncio.Event(), None
        future = loop.create_future()
        self._pending.append(_Pending(request, future))
        if self._worker is None or self._worker.done():
            self._worker = asyncio.ensure_future(self._serve())
        assert self._wakeup is not None  # made with the loop above
        self._wakeup.set()
        return await future

    async def _serve(self) -> None:
        assert self._wakeup is not None  # _serve starts only after generate() made it
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            await asyncio.sleep(0)  # let coroutines woken by the last batch submit their next requests
            while self._pending:
                batch = self._take_batch()
                try:
                    results = await asyncio.to_thread(self._run_batch, [p.request for p in batch])
                except Exception as exc:  # a failed batch fails its requests, not the engine
                    for p in batch:
                        if not p.future.done():
                            p.future.set_exception(EngineError(f"{self.name}: generation failed: {exc}"))
                    continue
                for p, result in zip(batch, results):
                    if not p.future.done():
                        p.future.set_result(result)
                await asyncio.sleep(0)

    def _take_batch(self) -> list[_Pending]:
        """Oldest request first, then others with the same decoding settings, up to the row cap."""
        head = self._pending[0].request
        key = (head.temperature, head.top_p, head.max_tokens)
        batch: list[_Pending] = []
        rows = 0
        for p in list(self._pending):
            r = p.request
            if (r.temperature, r.top_p, r.max_tokens) != key:
                continue
            if batch and rows + r.n > self.max_batch_rows:
                break
            batch.append(p)
            rows += r.n
            self._pending.remove(p)
        return batch

    def _run_batch(self, requests: list[GenerationRequest]) -> list[Generation]:
        import torch

        head = requests[0]
        prompts = [chat_prompt_ids(self.tokenizer, r.messages) for r in requests]
        rows = [ids for ids, r in zip(prompts, requests) for _ in range(r.n)]
        inputs = self.tokenizer.pad({"input_ids": rows}, return_tensors="pt").to(self.device)  # left padding
        # One generator seed per batch, from every request's seed: a request alone in its
        # batch is reproducible; shared batches depend on what ran together.
        torch.manual_seed(derive_seed(*[r.seed for r in requests]))
        sampling = head.temperature > 0
        with torch.inference_mode():
            output = self.model.generate(
                **inputs,
                do_sample=sampling,
                temperature=head.temperature if sampling else None,
                top_p=head.top_p if sampling else None,
                top_k=None,
                max_new_tokens=head.max_tokens,
                pad_token_id=self.tokenizer.pad_token_id,
            )
        new_tokens = output[:, inputs["input_ids"].shape[1] :].tolist()
        completions = []
        for tokens in new_tokens:
            end = next((i for i, t in enumerate(tokens) if t in self._eos), None)
            if end is None:
                completions.append(
                    Completion(self.tokenizer.decode(tokens, skip_special_tokens=True), "length", len(tokens))
                )
            else:
                completions.append(
                    Completion(self.tokenizer.decode(tokens[:end], skip_special_tokens=True), "stop", end + 1)
                )
        results, start = [], 0
        for r, prompt_tokens in zip(requests, map(len, prompts)):
            mine = completions[start : start + r.n]
            start += r.n
            results.append(Generation(mine, prompt_tokens, sum(c.completion_tokens or 0 for c in mine)))
        return results

    async def close(self) -> None:
        worker, self._worker = self._worker, None
        if worker is not None:
            home = worker.get_loop()
            if home is asyncio.get_running_loop():
                await settle([worker])  # a batch already on its thread still ends there
            elif not home.is_closed():
                home.call_soon_threadsafe(worker.cancel)
        self.model = None
