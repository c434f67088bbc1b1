"""Backends behind one async interface (see base.py): what a backend is, and bon's own three.

A backend is its typed options class and a loader. bon/plugins.py registers these three
and any plug-in's by name (entry-point group `bon.backends`); tests register a scripted
backend the same way. Imports of heavy libraries (torch, transformers, vllm, openai) happen
only when an engine is created, so `import bon` and `bon --help` stay fast.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from bon.config import EngineConfig, HFOptions, ServerOptions, VLLMOptions
from bon.engines.base import (
    BackendUnavailable,
    Completion,
    Engine,
    EngineError,
    EngineWrapper,
    Generation,
    GenerationRequest,
)

__all__ = [
    "HF",
    "OPENAI",
    "VLLM",
    "Backend",
    "BackendUnavailable",
    "Completion",
    "Engine",
    "EngineError",
    "EngineWrapper",
    "Generation",
    "GenerationRequest",
    "default_backend",
]


@dataclass(frozen=True)
class Backend:
    name: str
    options: type  # the typed options dataclass
    load: Callable[[EngineConfig], Awaitable[Engine]]
    local: bool  # loads weights in this process: two local roles run as sequential phases
    check: Callable[[EngineConfig], None] | None = None  # can it run as asked? (raise BackendUnavailable)

    def with_defaults(self, config: EngineConfig) -> EngineConfig:
        """`config` with this backend's default options where it names none."""
        return config if config.options is not None else replace(config, options=self.options())

    def check_config(self, config: EngineConfig) -> None:
        """Fail early, with a line that says what to do, when this backend cannot run as asked."""
        if self.check:
            self.check(self.with_defaults(config))

    async def create(self, config: EngineConfig) -> Engine:
        config = self.with_defaults(config)
        self.check_config(config)
        return await self.load(config)


def vllm_installed() -> bool:
    return importlib.util.find_spec("vllm") is not None


def gpu_visible() -> bool:
    """An NVIDIA GPU this process may use, checked without importing torch."""
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) in ("", "-1"):
        return False
    return Path("/dev/nvidia0").exists() or Path("/proc/driver/nvidia/gpus").is_dir()


def default_backend(base_url: Any = None) -> str:
    """openai when a server is named; else vllm when it is installed and a GPU is visible; else transformers."""
    if base_url:
        return "openai"
    return "vllm" if vllm_installed() and gpu_visible() else "hf"


def _check_vllm(config: EngineConfig) -> None:
    if not vllm_installed():
        raise BackendUnavailable('the vllm backend needs vLLM: pip install "bon[vllm]" (or use --backend hf / openai)')


def _check_server(config: EngineConfig) -> None:
    if not (config.options and config.options.base_url):
        raise BackendUnavailable("the openai backend needs --base-url (for example http://127.0.0.1:8000/v1)")


async def _load_vllm(config: EngineConfig) -> Engine:
    from bon.engines.vllm import VLLMEngine

    return await VLLMEngine.load(config)


async def _load_server(config: EngineConfig) -> Engine:
    from bon.engines.openai import OpenAIEngine

    return OpenAIEngine(config)


async def _load_hf(config: EngineConfig) -> Engine:
    from bon.engines.hf import HFEngine

    return await HFEngine.load(config)


VLLM = Backend("vllm", VLLMOptions, _load_vllm, local=True, check=_check_vllm)
OPENAI = Backend("openai", ServerOptions, _load_server, local=False, check=_check_server)
HF = Backend("hf", HFOptions, _load_hf, local=True)
