"""Backends behind one async interface (see base.py), created by name.

Imports of heavy libraries (torch, transformers, vllm, openai) happen only when an engine
is created, so `import bon` and `bon --help` stay fast.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from bon.config import EngineConfig
from bon.engines.base import BackendUnavailable, Completion, Engine, EngineError, Generation, GenerationRequest

BACKENDS = ("vllm", "openai", "hf")

__all__ = ["BACKENDS", "BackendUnavailable", "Completion", "Engine", "EngineError", "Generation", "GenerationRequest",
           "create_engine", "default_backend", "check_backend"]


def vllm_installed() -> bool:
    return importlib.util.find_spec("vllm") is not None


def gpu_visible() -> bool:
    """An NVIDIA GPU this process may use, checked without importing torch."""
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) in ("", "-1"):
        return False
    return Path("/dev/nvidia0").exists() or Path("/proc/driver/nvidia/gpus").is_dir()


def default_backend() -> str:
    """vllm when it is installed and a GPU is visible, otherwise transformers."""
    return "vllm" if vllm_installed() and gpu_visible() else "hf"


def check_backend(config: EngineConfig) -> None:
    """Fail early, with a line that says what to do, for a backend that cannot run."""
    if config.backend not in BACKENDS:
        raise BackendUnavailable(f"unknown backend {config.backend!r} (choose one of {', '.join(BACKENDS)})")
    if config.backend == "vllm" and not vllm_installed():
        raise BackendUnavailable('the vllm backend needs vLLM: pip install "bon[vllm]" (or use --backend hf / openai)')
    if config.backend == "openai" and not config.base_url:
        raise BackendUnavailable("the openai backend needs --base-url (for example http://127.0.0.1:8000/v1)")


async def create_engine(config: EngineConfig) -> Engine:
    check_backend(config)
    if config.backend == "openai":
        from bon.engines.openai import OpenAIEngine

        return OpenAIEngine(config)
    if config.backend == "hf":
        from bon.engines.hf import HFEngine

        return await HFEngine.load(config)
    from bon.engines.vllm import VLLMEngine

    return await VLLMEngine.load(config)
