"""Views of a finished (or running) run: they read bon's output through `bon.io.output` and
its manifest, and print or return figures. They load no model.

May import `bon.runs` (plan and eval play tournaments), `bon.tournament`, `bon.io`, config
and errors; never `bon.cli`. Rich is imported here only, and only by what draws.
"""
