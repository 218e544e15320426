"""Named points inside every write of a run folder, where a test can make the process die.

The crash tests (tests/core/test_crash_resume.py) set ``NLSTUDIO_CRASH_AT`` in a training
process to ``POINT:N[:ACTION]``: the N-th time the process reaches ``crashpoint(POINT)`` it

- ``kill`` (default): sends itself SIGKILL, dying mid-write as a power cut or the OOM killer
  would;
- ``term`` / ``hup`` / ``int``: sends itself that signal once and carries on (the handler asks
  the trainer to stop at the next step boundary);
- ``enospc``: raises ``OSError(ENOSPC)`` there, as a full disk would.

Unset (always, outside tests) it costs one dictionary lookup per call. The points are listed
in :data:`POINTS`, so a test can visit every one of them.
"""
from __future__ import annotations

import errno
import os
import signal

ENV = "NLSTUDIO_CRASH_AT"

POINTS = (
    "csv.append",          # between the two halves of one CSV row
    "csv.rewrite",         # while a resume rewrites a CSV to its checkpointed length
    "status.write",        # inside the temporary file of status.json
    "checkpoint.weights",  # inside the temporary checkpoint folder's model.safetensors
    "checkpoint.state",    # inside its state.pt (optimizer, RNG)
    "checkpoint.manifest", # inside its checkpoint.json
    "checkpoint.commit",   # after the folder is complete, before it is renamed into place
    "checkpoint.link",     # after the rename, before model.safetensors points at it
    "checkpoint.prune",    # while older checkpoint folders are removed
    "eval.rows",           # between an evaluation's eval.csv and delay.csv rows
)

_hits: dict[str, int] = {}
_spec = [""]  # the setting the counts belong to: a new setting starts them over
_ACTIONS = {"term": signal.SIGTERM, "int": signal.SIGINT, "kill": signal.SIGKILL}
if hasattr(signal, "SIGHUP"):
    _ACTIONS["hup"] = signal.SIGHUP


def crashpoint(name: str) -> None:
    spec = os.environ.get(ENV)
    if not spec:
        return
    if spec != _spec[0]:
        reset()
        _spec[0] = spec
    point, _, rest = spec.partition(":")
    if point != name:
        return
    count, _, action = rest.partition(":")
    _hits[name] = _hits.get(name, 0) + 1
    if str(_hits[name]) != count:
        return
    action = action or "kill"
    if action == "enospc":
        raise OSError(errno.ENOSPC, "No space left on device (injected at crashpoint "
                                    f"{name})")
    os.kill(os.getpid(), _ACTIONS[action])


def reset() -> None:
    """Start the counts over (an in-process test that runs the same setting twice)."""
    _hits.clear()
