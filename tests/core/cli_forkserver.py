"""A fork server for the crash tests: imports the CLI (torch, pydantic, the trainer) once, then
forks one child per request that runs ``nlstudio.cli.main(argv)`` exactly as ``nlstudio`` would
in a new process (its own pid, signal handlers, files and exit code), so a test can start and
kill 100+ real training processes in seconds instead of paying ~2 s of imports for each.

Protocol (one JSON object per line): the test writes
``{"argv": [...], "cwd": ..., "env": {...}, "log": path, "kill_after": s | null,
"signal": n}``; the server answers ``{"pid": n}`` once the child runs, then
``{"code": n, "killed": bool}`` when it has ended (``code`` as the shell reports it: 128 + N
for a death by signal N). Given a project file as its argument, it first trains it for two
steps itself (see :func:`warm_up`). ``kill_after`` sends ``signal`` after that many seconds unless the
child ended first (the server itself sends it, before reaping: the pid cannot be reused).
"""
from __future__ import annotations

import json
import os
import select
import signal
import sys

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402

torch.set_num_threads(1)

from nlstudio import cli, commands, trainer  # noqa: E402,F401  (imported once, here)


def child(request: dict) -> None:
    # Stop signals wait (blocked) through this set-up and arrive inside the ``try`` below,
    # where ``nlstudio`` would see them: a new process's default handlers, then cli.main.
    signal.pthread_sigmask(signal.SIG_BLOCK, commands.STOP_SIGNALS)
    for s in commands.STOP_SIGNALS:
        signal.signal(s, signal.SIG_DFL if s != signal.SIGINT else signal.default_int_handler)
    os.chdir(request["cwd"])
    os.environ.update(request.get("env") or {})
    fd = os.open(request["log"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    sys.stdout = os.fdopen(1, "w", buffering=1)
    sys.stderr = os.fdopen(2, "w", buffering=1)
    try:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, commands.STOP_SIGNALS)
        code = cli.main(request["argv"])
    except KeyboardInterrupt:  # SIGINT before cli.main's own handling began (this setup): as
        print("nlstudio: interrupted", file=sys.stderr)  # cli.main answers one in its start-up
        code = 130
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:  # noqa: BLE001 - reported like the interpreter would
        import traceback

        traceback.print_exc()
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(int(code))


def warm_up(project: str) -> None:
    """One short run in the server itself, so every lazy import and first-call cost (torch's
    meta-device build of the resource check, kernels) is paid once, before any fork."""
    import contextlib
    import io
    import tempfile

    with tempfile.TemporaryDirectory() as tmp, contextlib.redirect_stdout(io.StringIO()), \
            contextlib.redirect_stderr(io.StringIO()):
        code = cli.main(["train", project, "--out", os.path.join(tmp, "run"), "--quiet",
                         "--threads", "1", "--steps", "2"])
        code = code or cli.main(["eval", os.path.join(tmp, "run")])
    if code:
        raise SystemExit(f"warm-up run failed with exit code {code}")


def serve() -> None:
    for line in sys.stdin:
        request = json.loads(line)
        pid = os.fork()
        if pid == 0:
            child(request)
        print(json.dumps({"pid": pid}), flush=True)
        killed = False
        delay = request.get("kill_after")
        if delay is not None:
            pidfd = os.pidfd_open(pid)
            ready, _, _ = select.select([pidfd], [], [], max(0.0, float(delay)))
            os.close(pidfd)
            if not ready:
                os.kill(pid, int(request.get("signal", signal.SIGKILL)))
                killed = True
        _, status = os.waitpid(pid, 0)
        code = os.waitstatus_to_exitcode(status)
        print(json.dumps({"code": 128 - code if code < 0 else code, "killed": killed}),
              flush=True)


if __name__ == "__main__":
    if len(sys.argv) > 1:
        warm_up(sys.argv[1])
    serve()
