"""One writer per output: a run (or a merge) holds OUTPUT.lock while it writes OUTPUT.

The lock is the kernel's (flock) on a file beside the output, so it ends with its holder
however the holder ends — SIGKILL, out of memory, a crash — and leaves nothing stale to
clean up; the file only holds the holder's pid and host, for the line that refuses a
second writer. A holder removes the file as it lets go (a clean end), still holding it, so
a process that opened the old file in between notices and takes the new one.

Shared filesystems: on NFS, Linux sends flock to the server as a POSIX lock (NFSv4, or v3
with lockd), so runs on different machines exclude each other. Mounted so that locks stay
on one machine (NFS `nolock` or `local_lock=all`, Lustre `localflock`), the lock only stops
a second run on the same machine. Where the filesystem refuses locks (Lustre mounted
without `flock`) bon says so in one line and writes without one.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import socket
from pathlib import Path

from bon.errors import OutputError
from bon.runs.checkpoint import CheckpointError

LOCK_SUFFIX = ".lock"


def lock_path(output: Path) -> Path:
    return output.with_name(output.name + LOCK_SUFFIX)


def _holder(fd: int) -> str:
    with contextlib.suppress(OSError):
        text = os.pread(fd, 200, 0).decode("utf-8", "replace").strip()
        if text:
            return text
    return "another process"  # it has locked the file and not yet written its name


class OutputLock:
    """The one-writer lock of `output`; `acquire` refuses (CheckpointError, exit 2) while another
    process holds it."""

    def __init__(self, output: Path):
        self.output, self.path = output, lock_path(output)
        self._fd: int | None = None

    def acquire(self) -> None:
        while True:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
            except OSError as exc:  # a read-only or missing directory: nothing can be written there
                raise OutputError(exc, self.output) from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _holder(fd)
                os.close(fd)
                raise CheckpointError(
                    f"{self.output} is being written by {holder}: one run writes an output at a time; "
                    f"wait for it to end, or stop it (bon status {self.output})"
                ) from None
            except OSError as exc:
                logging.getLogger("bon").warning(
                    "cannot lock %s on this filesystem (%s): a second run on %s would not be stopped",
                    self.path,
                    (exc.strerror or str(exc)).lower(),
                    self.output,
                )
                self._fd = fd
                return
            if self._is_current(fd):
                break
            os.close(fd)  # its last holder removed it as we opened it: lock the file there now
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
        self._fd = fd

    def _is_current(self, fd: int) -> bool:
        try:
            named = os.stat(self.path)
        except FileNotFoundError:
            return False
        mine = os.fstat(fd)
        return (named.st_dev, named.st_ino) == (mine.st_dev, mine.st_ino)

    def release(self) -> None:
        if self._fd is None:
            return
        with contextlib.suppress(OSError):
            os.unlink(self.path)  # while still holding it: see the module's doc
        os.close(self._fd)
        self._fd = None


def writer_of(output: Path) -> str | None:
    """Who holds `output`'s lock now (its pid and host), or None: for `bon merge`, which must
    not read a shard that a run is still writing."""
    try:
        fd = os.open(lock_path(output), os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return _holder(fd)
    except OSError:
        return None
    finally:
        os.close(fd)  # a lock taken here goes with it
    return None
