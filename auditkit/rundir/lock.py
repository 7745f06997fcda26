"""One writer per run directory: ``RUN_DIR/.lock``, with stale-lock detection.

A command that writes a run directory (``run``, ``report``, ``check``, ``export``) holds its lock
for as long as it writes. The lock file is created exclusively and names its holder: pid, host,
the process's start time and the command. A second writer is refused with that holder named.
A lock whose holder is gone (same host, and no live process with that pid and start time: a
killed run) is stale and is taken over; a lock held from another host is never taken over,
because this host cannot tell whether that process lives (remove the file by hand once sure).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import Any

from auditkit.errors import UsageError

LOCK_NAME = ".lock"


def _start_time(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (Linux), to tell a reused pid."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[-1].split()[19]


def _alive(pid: int, started: str | None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's live process
    now = _start_time(pid)
    return started is None or now is None or now == started


class RunLock:
    """``with RunLock(root, "run"):`` holds ``root/.lock`` or raises :class:`RunLocked`."""

    def __init__(self, root: Path, command: str) -> None:
        self.path = Path(root) / LOCK_NAME
        self.command = command
        self.taken_over: dict[str, Any] | None = None
        """The stale holder this lock replaced, if any."""
        self._held = False

    def holder(self) -> dict[str, Any]:
        return {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": _start_time(os.getpid()),
            "command": self.command,
            "since_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "argv": sys.argv[:4],
        }

    def acquire(self) -> None:
        if self._held:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _attempt in range(3):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                current = self._read()
                if current is not None and not self._stale(current):
                    raise RunLocked(self.path, current) from None
                self.taken_over = current or {}
                with contextlib.suppress(FileNotFoundError):
                    self.path.unlink()
                continue
            with os.fdopen(fd, "w") as fh:
                json.dump(self.holder(), fh)
                fh.flush()
                os.fsync(fh.fileno())
            self._held = True
            return
        raise RunLocked(self.path, self._read() or {})

    def _read(self) -> dict[str, Any] | None:
        """The holder recorded in the lock file; None when it is empty or torn (a holder killed
        while writing it: stale), or gone."""
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def _stale(self, holder: dict[str, Any]) -> bool:
        if not holder:
            return True  # removed meanwhile
        if holder.get("host") != socket.gethostname():
            return False
        pid = holder.get("pid")
        if not isinstance(pid, int):
            return True
        if pid == os.getpid():
            return False
        return not _alive(pid, holder.get("started"))

    def release(self) -> None:
        if self._held:
            self._held = False
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()


class RunLocked(UsageError):
    """Another live process holds the run directory's lock."""

    def __init__(self, path: Path, holder: dict[str, Any]) -> None:
        who = (
            f"pid {holder.get('pid')} on host {holder.get('host')!r} "
            f"('auditkit {holder.get('command')}', since {holder.get('since_utc')})"
        )
        same_host = holder.get("host") == socket.gethostname()
        hint = (
            "wait for it to finish, or stop it; a killed holder's lock is taken over automatically."
            if same_host
            else f"wait for it to finish. If that process is gone, delete {path} and rerun."
        )
        super().__init__(
            f"{path.parent} is in use by {who}: two writers would interleave their files, so "
            "this command was refused and nothing was written.",
            hint=hint,
        )
        self.holder = holder
