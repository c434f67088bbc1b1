"""The architecture as a test: every import in bon/ points down its layers, so there is no
import circle and a newcomer can trust the package names (bon/*/__init__.py say the rules).

Layers, top first: cli → serve → views → runs → plugins → engines → tournament → io → config, errors, tasks.
Imports inside functions count too: a deferred import is still a dependency.
"""

from __future__ import annotations

import ast
from pathlib import Path

BON = Path(__file__).resolve().parent.parent / "bon"
LAYERS = ["cli", "serve", "views", "runs", "plugins", "engines", "tournament", "io", "config", "errors", "tasks"]
# The bottom three know nothing of each other but errors (config raises UsageError).
RANK = {name: LAYERS.index(name) for name in LAYERS} | {"errors": len(LAYERS), "tasks": len(LAYERS)}


def layer(module: str) -> str | None:
    """bon.runs.api -> runs; bon (the package's own __init__) -> None."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "bon" else None


def imports() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for path in BON.rglob("*.py"):
        relative = path.relative_to(BON.parent).with_suffix("")
        module = ".".join(relative.parts[:-1] if relative.name == "__init__" else relative.parts)
        found = graph.setdefault(module, set())
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("bon"):
                found.add(node.module)
                found.update(
                    f"{node.module}.{a.name}"
                    for a in node.names
                    if (BON.parent / f"{node.module}.{a.name}".replace(".", "/")).with_suffix(".py").exists()
                )
            elif isinstance(node, ast.Import):
                found.update(a.name for a in node.names if a.name.startswith("bon"))
    return graph


def test_every_import_points_down_the_layers():
    upward = []
    for module, targets in imports().items():
        own = layer(module)
        if own is None or own == "__main__":
            continue  # bon/__init__ is the public API: it may reach anything (lazily)
        for target in targets:
            other = layer(target)
            if other is None:  # `from bon import __version__`
                continue
            if other != own and RANK[other] < RANK[own]:
                upward.append(f"{module} imports {target}")
    assert not upward, "\n".join(sorted(upward))


def test_no_import_circles():
    graph = imports()
    modules = {m: {t for t in targets if t in graph and t != m} for m, targets in graph.items()}
    # A package's __init__ re-exporting its own modules is no circle; between packages, or
    # modules of one package importing each other in a ring, is.
    circles, state = [], {}

    def visit(module: str, path: list[str]) -> None:
        state[module] = "open"
        for target in modules[module]:
            if target.startswith(module + "."):
                continue  # a package importing its own modules
            if state.get(target) == "open":
                if not module.startswith(target + "."):  # a module importing its own package's __init__
                    circles.append(" -> ".join(path[path.index(target) :] + [target]) if target in path else target)
            elif target not in state:
                visit(target, path + [target])
        state[module] = "done"

    for module in sorted(modules):
        if module not in state:
            visit(module, [module])
    assert not circles, "\n".join(circles)
