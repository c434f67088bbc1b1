"""Backends behind one async interface (see base.py), found by name in a registry.

Each backend registers its typed options class and a loader. Imports of heavy libraries
(torch, transformers, vllm, openai) happen only when an engine is created, so `import bon`
and `bon --help` stay fast. Tests register a scripted backend the same way.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Awaitable, Callable

from bon.config import EngineConfig, HFOptions, ServerOptions, VLLMOptions, option_names
from bon.engines.base import BackendUnavailable, Completion, Engine, EngineError, Generation, GenerationRequest

__all__ = ["Backend", "BackendUnavailable", "Completion", "Engine", "EngineError", "Generation", "GenerationRequest",
           "check_backend", "create_engine", "default_backend", "get_backend", "register_backend",
           "resolve_options"]


@dataclass(frozen=True)
class Backend:
    name: str
    options: type  # the typed options dataclass
    load: Callable[[EngineConfig], Awaitable[Engine]]
    local: bool  # loads weights in this process: two local roles run as sequential phases
    check: Callable[[EngineConfig], None] | None = None  # can it run as asked? (raise BackendUnavailable)


_REGISTRY: dict[str, Backend] = {}


def register_backend(backend: Backend) -> None:
    _REGISTRY[backend.name] = backend


def get_backend(name: str) -> Backend:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise BackendUnavailable(f"unknown backend {name!r} (choose one of {', '.join(_REGISTRY)})") from None


def resolve_options(backend: str, given: dict[str, Any]) -> Any:
    """The backend's options from keyword values; a key the backend does not take is an error
    that names the backends which do."""
    options_type = get_backend(backend).options
    known = option_names(options_type)
    for key in given:
        if key not in known:
            takers = [b.name for b in _REGISTRY.values() if key in option_names(b.options)]
            where = f" (it is for the {' and '.join(takers)} backend{'s' if len(takers) > 1 else ''})" if takers else ""
            raise BackendUnavailable(f"--{key.replace('_', '-')} does not apply to the {backend} backend{where}")
    return options_type(**given)


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


def check_backend(config: EngineConfig) -> None:
    """Fail early, with a line that says what to do, for a backend that cannot run."""
    backend = get_backend(config.backend)
    if backend.check:
        backend.check(config)


async def create_engine(config: EngineConfig) -> Engine:
    backend = get_backend(config.backend)  # EngineConfig has filled in its default options
    check_backend(config)
    return await backend.load(config)


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


register_backend(Backend("vllm", VLLMOptions, _load_vllm, local=True, check=_check_vllm))
register_backend(Backend("openai", ServerOptions, _load_server, local=False, check=_check_server))
register_backend(Backend("hf", HFOptions, _load_hf, local=True))
