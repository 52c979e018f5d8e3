"""Run many tool command lines quickly, each as ``python tools/X.py ARGS`` would run it.

Starting Python and importing torch, torchvision and gn_det costs seconds per command on the CI's
2 cores; a table of 50 bad inputs would take minutes. ``ToolRunner`` starts ONE server process (with
PYTHONPATH set to this checkout) that imports them once and never computes anything; each command
then runs in a fresh ``fork`` of it: working directory, environment and ``sys.argv`` set, stdout and
stderr redirected to files, the script executed as ``__main__`` (``runpy.run_path``), and the exit
status taken from the process exactly as the shell would see it (an uncaught exception prints its
traceback and exits 1, as the interpreter does). Commands of one batch run in parallel.
"""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TINY_CONFIG = os.path.join(os.path.dirname(os.path.abspath(__file__)), "tiny_gn.yaml")  # R-18 GN at 64 px

_SERVER = r"""
import json, os, runpy, sys, traceback
import torch, torchvision  # noqa: F401  (the expensive imports, done once)
import gn_det.benchmark, gn_det.checkpoint, gn_det.data, gn_det.engine, gn_det.modeling  # noqa: F401


def child(req):
    code = 1
    try:
        os.chdir(req["cwd"])
        os.environ.update(req["env"])
        if req["umask"] is not None:
            os.umask(req["umask"])
        os.dup2(os.open(os.devnull, os.O_RDONLY), 0)  # stdin is the server's request pipe: not the tool's
        for fd, path in ((1, req["stdout"]), (2, req["stderr"])):
            os.dup2(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644), fd)
        sys.argv = [req["script"]] + req["argv"]
        sys.path[0] = os.path.dirname(os.path.abspath(req["script"]))  # as `python script.py` sets it
        try:
            runpy.run_path(req["script"], run_name="__main__")
            code = 0
        except SystemExit as e:
            if e.code is None or isinstance(e.code, int):
                code = e.code or 0
            else:
                print(e.code, file=sys.stderr)
                code = 1
        except BaseException:
            traceback.print_exc()
            code = 1
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


for line in sys.stdin:
    batch, parallel = json.loads(line)
    results, running, pending = {}, {}, list(enumerate(batch))
    while pending or running:
        while pending and len(running) < parallel:
            index, req = pending.pop(0)
            pid = os.fork()
            if pid == 0:
                child(req)
            running[pid] = index
        pid, status = os.wait()
        results[running.pop(pid)] = os.waitstatus_to_exitcode(status)
    sys.stdout.write(json.dumps([results[i] for i in range(len(batch))]) + "\n")
    sys.stdout.flush()
"""


@dataclass
class Result:
    """What a command line left: exit status, stdout, stderr."""

    rc: int
    stdout: str
    stderr: str

    @property
    def err_lines(self) -> List[str]:
        return self.stderr.splitlines()


@dataclass
class Command:
    """``python <script> <argv...>`` in ``cwd`` with extra environment ``env``."""

    script: str
    argv: Sequence[str]
    cwd: str
    env: Optional[Dict[str, str]] = None
    umask: Optional[int] = None


class ToolRunner:
    """A server process with gn_det imported; ``run_many`` forks it once per command."""

    def __init__(self, env: Optional[Dict[str, str]] = None):
        full_env = dict(os.environ, PYTHONPATH=REPO, **(env or {}))
        self._proc = subprocess.Popen([sys.executable, "-c", _SERVER], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                      env=full_env, cwd=REPO, text=True)
        self._tmp = tempfile.mkdtemp(prefix="tool_runner_")
        self._count = 0

    def run_many(self, commands: Sequence[Command], parallel: int = 0) -> List[Result]:
        """Run ``commands`` (``parallel`` at a time, default the CPU count); results in order."""
        requests = []
        for cmd in commands:
            self._count += 1
            out, err = (os.path.join(self._tmp, f"{self._count}.{s}") for s in ("out", "err"))
            requests.append({"script": os.path.join(REPO, cmd.script), "argv": [str(a) for a in cmd.argv],
                             "cwd": str(cmd.cwd), "env": dict(cmd.env or {}), "umask": cmd.umask, "stdout": out,
                             "stderr": err})
        self._proc.stdin.write(json.dumps([requests, parallel or os.cpu_count() or 2]) + "\n")
        self._proc.stdin.flush()
        line = self._proc.stdout.readline()
        if not line:
            raise RuntimeError("the tool runner's server process died")
        codes = json.loads(line)
        results = []
        for code, req in zip(codes, requests):
            with open(req["stdout"], encoding="utf-8", errors="replace") as f_out, \
                    open(req["stderr"], encoding="utf-8", errors="replace") as f_err:
                results.append(Result(code, f_out.read(), f_err.read()))
        return results

    def run(self, script: str, argv: Sequence[str], cwd: str, env: Optional[Dict[str, str]] = None,
            umask: Optional[int] = None) -> Result:
        """One command line."""
        return self.run_many([Command(script, argv, cwd, env, umask)])[0]

    def close(self) -> None:
        """Stop the server."""
        if self._proc.poll() is None:
            self._proc.stdin.close()
            self._proc.wait(timeout=60)


def run_subprocess(script: str, argv: Sequence[str], cwd: str, env: Optional[Dict[str, str]] = None,
                   timeout: int = 600) -> Result:
    """The same command line in a real ``python`` process (PYTHONPATH = this checkout)."""
    full_env = dict(os.environ, PYTHONPATH=REPO, **(env or {}))
    proc = subprocess.run([sys.executable, os.path.join(REPO, script), *map(str, argv)], cwd=cwd, env=full_env,
                          capture_output=True, text=True, timeout=timeout)
    return Result(proc.returncode, proc.stdout, proc.stderr)


def snapshot(directory: str) -> Dict[str, str]:
    """relative path -> sha1 of every file under ``directory`` ({} when absent): to show a tool changed nothing."""
    out = {}
    for base, _, files in os.walk(directory):
        for name in files:
            full = os.path.join(base, name)
            with open(full, "rb") as f:
                out[os.path.relpath(full, directory)] = hashlib.sha1(f.read()).hexdigest()
    return out
