"""``auditkit`` commands in processes of their own, without paying the imports each time.

A test that must run the CLI in a separate process (to kill it with SIGKILL halfway through a
write, say) would pay ``import torch, diffusers, transformers`` (several seconds) per command.
:class:`ForkedCli` starts one server process that imports them once, then forks a child per
command: the child is a fresh process as far as the command can tell (its own pid, environment,
standard output and error, exit status, and death by signal), started in milliseconds. The
server runs no torch operation itself, so no thread pool exists when it forks.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

SERVER = r"""
import json, os, sys, traceback
import torch, diffusers, transformers  # the imports every command pays: paid once, here
import auditkit.cli, auditkit.run, auditkit.analyses, auditkit.report.render  # noqa: F401
from auditkit.cli import main

print(json.dumps({"ready": os.getpid()}), flush=True)
for line in sys.stdin:
    request = json.loads(line)
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.setsid()
            os.environ.update(request["env"])
            os.chdir(request["cwd"])
            for fd, name in ((1, "stdout"), (2, "stderr")):
                target = os.open(request[name], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
                os.dup2(target, fd)
                os.close(target)
            main(request["args"], prog_name="auditkit")
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        except BaseException:
            traceback.print_exc()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    print(json.dumps({"pid": pid}), flush=True)
    _, status = os.waitpid(pid, 0)
    print(json.dumps({"code": os.waitstatus_to_exitcode(status)}), flush=True)
"""


@dataclass
class Finished:
    """What a forked command left: as :class:`subprocess.CompletedProcess` has it."""

    args: list[str]
    returncode: int
    stdout: str
    stderr: str


class ForkedCli:
    """One server process; :meth:`run` runs ``auditkit ARGS`` in a fork of it."""

    def __init__(self, scratch: Path) -> None:
        self.scratch = scratch
        self.count = 0
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        self.server = subprocess.Popen(
            [sys.executable, "-c", SERVER],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
            cwd=ROOT,
        )
        ready = self._read(120)
        if "ready" not in ready:
            raise RuntimeError(f"the forked-CLI server did not start: {ready}")

    def _read(self, timeout: float) -> dict[str, Any]:
        assert self.server.stdout is not None
        readable, _, _ = select.select([self.server.stdout], [], [], timeout)
        if not readable:
            raise TimeoutError(f"no answer from the forked-CLI server in {timeout} s")
        line = self.server.stdout.readline()
        if not line:
            raise RuntimeError(f"the forked-CLI server exited ({self.server.poll()})")
        answer: dict[str, Any] = json.loads(line)
        return answer

    def run(
        self, args: list[str], *, env: dict[str, str] | None = None, timeout: float = 300
    ) -> Finished:
        """``auditkit ARGS`` with ``env`` added to the environment, in a new process; its exit
        status is negative (minus the signal) when a signal killed it."""
        assert self.server.stdin is not None
        self.count += 1
        out = self.scratch / f"command-{self.count}.out"
        err = self.scratch / f"command-{self.count}.err"
        request = {"args": args, "env": env or {}, "cwd": os.getcwd(),
                   "stdout": str(out), "stderr": str(err)}  # fmt: skip
        self.server.stdin.write(json.dumps(request) + "\n")
        self.server.stdin.flush()
        pid = int(self._read(30)["pid"])
        try:
            code = int(self._read(timeout)["code"])
        except TimeoutError:
            os.killpg(pid, signal.SIGKILL)
            raise
        return Finished(
            args, code, out.read_text(errors="replace"), err.read_text(errors="replace")
        )

    def close(self) -> None:
        """Stop the server (a running command is left to finish)."""
        if self.server.stdin is not None:
            self.server.stdin.close()
        try:
            self.server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.server.kill()
            self.server.wait()
