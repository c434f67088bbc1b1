"""The errors bon's library raises for the caller to report.

The CLI maps them to one line and an exit code: usage and input problems exit 2, a model
or server that failed exits 1. Library users catch `BonError` for all of them.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit, urlunsplit


class BonError(Exception):
    """Anything bon reports as one line."""


class UsageError(BonError):
    """Bad settings or arguments: one line, exit 2."""


# Query parameters whose values are credentials by their name (gateways take keys this way).
SECRET_PARAMETERS = re.compile(
    r"(api[-_]?key|key|token|access[-_]?token|auth|secret|client[-_]?secret|password|passwd|pwd|sig|signature)",
    re.IGNORECASE,
)
_URL = re.compile(r"\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s'\"<>]+")
# `${NAME}` in a server URL: bon reads the variable itself, so the URL names the secret, never holds it.
ENV_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def redact(text: str) -> str:
    """`text` with every URL's user:password and secret-looking query values shown as ***.

    The one redaction every path uses (errors, records, logs, the manifest, the resume
    command), so a credential written into a server URL is never repeated anywhere. A
    `${NAME}` (a variable bon expands itself) is left as it is: it names the secret."""
    return _URL.sub(lambda match: _redact_url(match.group()), text)


def _redact_url(url: str) -> str:
    try:
        parts = urlsplit(url)
    except ValueError:  # not parseable (a broken IPv6 host): keep only what cannot be secret
        return url.split("://", 1)[0] + "://***"
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, host = netloc.rsplit("@", 1)
        netloc = f"{userinfo if ENV_REFERENCE.fullmatch(userinfo.split(':')[-1]) else '***'}@{host}"
    query = "&".join(_redact_parameter(pair) for pair in parts.query.split("&")) if parts.query else ""
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def _redact_parameter(pair: str) -> str:
    name, equals, value = pair.partition("=")
    if equals and value and SECRET_PARAMETERS.fullmatch(name) and not ENV_REFERENCE.fullmatch(value):
        return f"{name}=***"
    return pair


class OutputError(BonError):
    """A file bon writes could not be written: a full disk, a file-size limit, a read-only or
    vanished directory. One line naming the file (exit 1); what was written before stays whole."""

    resume_command: str | None = None  # set by the command line: how to continue the run

    def __init__(self, error: OSError, path: object):
        reason = (error.strerror or str(error)).lower()
        super().__init__(f"{reason} writing {path}")
        self.errno, self.path = error.errno, path
