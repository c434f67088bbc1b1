"""bon: best-of-N selection with reward reasoning models in a knockout tournament.

The Python API (the CLI is a thin layer over it)::

    import bon

    with bon.Judge("Reward-Reasoning/RRM-7B", backend="vllm") as judge:
        sel = judge.select("What is 2+2?", ["4", "5", "22"], votes=3, seed=0)
        sel.best, sel.best_index, sel.record
        m = judge.compare("What is 2+2?", "4", "5", votes=3)

    for out in bon.run(records, policy=bon.Policy("Qwen/Qwen2.5-7B-Instruct"), judge=judge, n=8):
        ...
"""

__version__ = "0.1.0"

__all__ = ["BonError", "Judge", "MatchResult", "Policy", "Selection", "UsageError", "arun", "run"]


def __getattr__(name: str):
    # Imported on first use: `bon --version` and `import bon.config` stay light.
    if name in ("Judge", "Policy", "Selection", "MatchResult"):
        from bon.runs import roles

        return getattr(roles, name)
    if name in ("run", "arun"):
        from bon.runs import api

        return getattr(api, name)
    if name in ("BonError", "UsageError"):
        from bon import errors

        return getattr(errors, name)
    raise AttributeError(f"module 'bon' has no attribute {name!r}")
