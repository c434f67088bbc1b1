"""How a command ends on an exception: a known failure becomes one line on stderr and an exit
code (2: bad usage or input; 1: a model or server failed, or a file could not be written); anything else is a bug and is
re-raised with its traceback. Every command shares it."""

from __future__ import annotations

import typer

from bon.errors import OutputError, UsageError, redact


def fail(exc: Exception, debug: bool, source: str | None = None) -> None:
    """Known failures become one line and an exit code; anything else is a bug: re-raised."""
    from bon.engines import BackendUnavailable, EngineError
    from bon.io.prompts import TemplateError
    from bon.io.records import InputError
    from bon.runs.checkpoint import CheckpointError

    if debug or isinstance(exc, typer.Exit):
        raise exc
    if isinstance(exc, (UsageError, InputError, TemplateError, BackendUnavailable, CheckpointError)):
        where = f"{source}: " if source and isinstance(exc, InputError) else ""
        typer.echo(f"bon: error: {where}{redact(str(exc))}", err=True)
        raise typer.Exit(2)
    if isinstance(exc, (EngineError, OutputError)):
        # Redacted here too: a plug-in backend's message may carry a server URL as given.
        typer.echo(f"bon: error: {redact(str(exc))}", err=True)
        if exc.resume_command:
            typer.echo(f"bon: continue with: {exc.resume_command}", err=True)
        raise typer.Exit(1)
    raise exc
