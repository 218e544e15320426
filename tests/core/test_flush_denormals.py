"""Subnormal floats are flushed to zero in every thread that computes (nlstudio/threads.py).

Each check runs in a fresh interpreter: the setting is a per-thread CPU register that a
pytest worker would otherwise keep, and a fresh process shows the state before and after.
"""
from __future__ import annotations

import json
import platform
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.skipif(platform.machine().lower() not in ("x86_64", "amd64"),
                                reason="checked on x86 (MXCSR)")

# 1e-39 is subnormal in float32; with denormals-are-zero it multiplies as 0.
PROBE = """
import threading, torch
def subnormal_survives():
    return (torch.tensor([1e-39], dtype=torch.float32) * 1.0).item() != 0.0
def in_new_thread(fn):
    out = []
    t = threading.Thread(target=lambda: out.append(fn()))
    t.start(); t.join()
    return out[0]
"""


def _run(body: str) -> dict:
    code = PROBE + textwrap.dedent(body)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_flush_in_this_thread_and_in_threads_started_later():
    got = _run("""
        import json
        from nlstudio.threads import configure_torch
        before = subnormal_survives()
        configure_torch(1)
        print(json.dumps({"before": before, "after": subnormal_survives(),
                          "later_thread": in_new_thread(subnormal_survives)}))
    """)
    assert got == {"before": True, "after": False, "later_thread": False}


def test_the_trainer_flushes_while_it_trains_and_gives_the_thread_its_mode_back(tmp_path):
    """Whoever starts a run (the GUI's worker, the command line, a script on its own thread),
    the thread that runs ``Trainer.run`` computes with subnormals flushed while it trains (seen
    from an event, which is published on that thread), and has its own mode back after."""
    got = _run(f"""
        import json
        from nlstudio.threads import flushing_denormals
        from nlstudio.trainer import Trainer
        from tests.conftest import _tiny_project_doc
        during = []
        def train():
            Trainer(_tiny_project_doc(steps=2), out={str(tmp_path / "run")!r}, snapshots=False,
                    evaluate=False, on_event=lambda e: during.append(flushing_denormals())).run()
            return flushing_denormals()
        after = in_new_thread(train)
        print(json.dumps({{"during": all(during) and len(during) > 2, "after": after,
                          "main": subnormal_survives()}}))
    """)
    assert got == {"during": True, "after": False, "main": True}


def test_the_command_line_run_in_process_gives_the_thread_its_mode_back(tmp_path):
    """``nlstudio train`` flushes (its own threads and processes keep it); called in-process,
    through ``nlstudio.commands.run``, the caller's thread gets its mode back."""
    got = _run(f"""
        import json
        from nlstudio import commands
        from nlstudio.threads import flushing_denormals
        from tests.conftest import _tiny_project_doc
        import pathlib
        path = pathlib.Path({str(tmp_path / "p.nlproj")!r})
        path.write_text(json.dumps(_tiny_project_doc(steps=1)))
        code = commands.run(["train", str(path), "--out", {str(tmp_path / "run")!r},
                             "--threads", "1"])
        print(json.dumps({{"code": code, "after": flushing_denormals(),
                          "survives": subnormal_survives()}}))
    """)
    assert got == {"code": 0, "after": False, "survives": True}
