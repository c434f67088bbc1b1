"""The registries of backends and strategies, filled the way pytest and simonw/llm fill theirs.

Two entry-point groups name what a package adds: `bon.backends` (each entry a
`bon.engines.Backend`) and `bon.strategies` (each a `bon.tournament.strategy.Strategy`
subclass or instance). A plug-in package declares, in its pyproject.toml:

    [project.entry-points."bon.strategies"]
    ladder = "bon_ladder:Ladder"

bon's own backends and strategies are registered through the very same loader (from
`BUILTIN`), so the plug-in path is the one every run takes, not a side door. A plug-in that
fails to load is reported once on the `bon` logger and listed by `bon plugins` with its
error; it never stops a run that does not use it.

This module sits above engines/ and tournament/ (it knows their interfaces) and below the
run, the views and the command line, which look names up here.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from typing import Any, TypeVar

from bon.engines import Backend, BackendUnavailable
from bon.errors import UsageError
from bon.tournament.strategy import Strategy

BACKENDS, STRATEGIES = "bon.backends", "bon.strategies"
T = TypeVar("T")

# bon's own, in the order help texts list them.
BUILTIN: dict[str, list[tuple[str, str]]] = {
    BACKENDS: [("vllm", "bon.engines:VLLM"), ("openai", "bon.engines:OPENAI"), ("hf", "bon.engines:HF")],
    STRATEGIES: [
        ("knockout", "bon.tournament.knockout:Knockout"),
        ("elo", "bon.tournament.elo:RoundRobin"),
        ("swiss", "bon.tournament.swiss:Swiss"),
        ("pool", "bon.tournament.pool:Pool"),
    ],
}


@dataclass(frozen=True)
class Plugin:
    """One entry of a registry, for `bon plugins`: where it came from and whether it loaded."""

    group: str
    name: str
    package: str  # the distribution that declared it ("bon" for the built-ins)
    version: str
    target: str  # module:attribute
    error: str | None = None


_backends: dict[str, Backend] = {}
_strategies: dict[str, Strategy] = {}
_found: list[Plugin] = []
_loaded = False


def register_backend(backend: Backend) -> None:
    """Make a backend available by its name (also for tests and notebooks: no package needed)."""
    if not isinstance(backend, Backend):
        raise TypeError(f"{backend!r} is not a bon.engines.Backend")
    _backends[backend.name] = backend


def register_strategy(strategy: Strategy | type[Strategy]) -> Strategy:
    """Make a strategy available by its name (an instance, or a class taking no arguments)."""
    instance = strategy() if isinstance(strategy, type) else strategy
    if not isinstance(instance, Strategy):
        raise TypeError(f"{strategy!r} is not a bon.tournament.strategy.Strategy")
    _strategies[instance.name] = instance
    return instance


_REGISTER: dict[str, Callable[[Any], object]] = {BACKENDS: register_backend, STRATEGIES: register_strategy}


def _register(entry: EntryPoint, package: str, version: str) -> None:
    error = None
    try:
        _REGISTER[entry.group](entry.load())
    except Exception as exc:  # a broken plug-in must not take bon down with it
        error = f"{type(exc).__name__}: {exc}"
        logging.getLogger("bon").warning("plug-in %s (%s %s) did not load: %s", entry.name, package, version, error)
    _found.append(Plugin(entry.group, entry.name, package, version, entry.value, error))


def load_plugins() -> None:
    """Register bon's own backends and strategies, then every installed plug-in's (once)."""
    global _loaded
    if _loaded:
        return
    _loaded = True
    from bon import __version__

    for group, builtins in BUILTIN.items():
        for name, target in builtins:
            _register(EntryPoint(name, target, group), "bon", __version__)
    for group in BUILTIN:
        for entry in entry_points(group=group):
            dist = entry.dist
            _register(entry, dist.name if dist else "?", dist.version if dist else "?")


def installed() -> list[Plugin]:
    """Every backend and strategy found, built-ins first, with the package that brought it."""
    load_plugins()
    return list(_found)


def _named(registry: dict[str, T], kind: str, name: str, error: type[Exception]) -> T:
    load_plugins()
    if name not in registry:
        raise error(f"unknown {kind} {name!r} (choose one of {', '.join(registry)})")
    return registry[name]


def get_backend(name: str) -> Backend:
    return _named(_backends, "backend", name, BackendUnavailable)


def get_strategy(name: str) -> Strategy:
    return _named(_strategies, "strategy", name, UsageError)


def backends() -> list[Backend]:
    load_plugins()
    return list(_backends.values())


def strategies() -> list[Strategy]:
    load_plugins()
    return list(_strategies.values())


def option_flag(name: str) -> str:
    """The flag that sets backend option `name`, as the backend that declares it spells it
    (`request_seed` is set by --no-request-seed)."""
    from bon.config import flag_spelling, option_names

    declaring = next((b.options for b in backends() if name in option_names(b.options)), None)
    return flag_spelling(declaring, name) if declaring else f"--{name.replace('_', '-')}"


def backend_options(name: str, given: dict[str, Any]) -> Any:
    """The backend's options from keyword values; a key the backend does not take is an error
    that names the backends which do."""
    from bon.config import option_names

    options_type = get_backend(name).options
    known = option_names(options_type)
    for key in given:
        if key not in known:
            takers = [b.name for b in backends() if key in option_names(b.options)]
            where = f" (it is for the {' and '.join(takers)} backend{'s' if len(takers) > 1 else ''})" if takers else ""
            raise BackendUnavailable(f"{option_flag(key)} does not apply to the {name} backend{where}")
    return options_type(**given)
