"""Checkpoints: everything a run needs to continue exactly, visible whole or not at all.

A checkpoint is one folder, ``checkpoints/step-<12 digits>/``, holding the weights
(``model.safetensors``), the optimizer and RNG state (``state.pt``) and ``checkpoint.json``
(step, world size, training time, cumulative level updates, the folder the project's data paths
resolve against, and the byte and row counts of the three CSVs at that step). It is written
under a temporary name (``.tmp-step-…``), each file fsynced, and renamed into place: a kill at
any instant leaves either the previous checkpoint or the new one, never weights of one step
with the optimizer of another. The newest complete ``step-…`` folder is the checkpoint (no
pointer file to keep in step); older ones are removed after the rename, and the top-level
``model.safetensors`` is re-linked to the newest weights for export.

Every field read back is validated (types, ranges, sizes against the files) before anything
is changed; a checkpoint that fails raises :class:`RunError` naming the file.
Older run folders (``checkpoint.pt`` + ``model.safetensors`` at the top) are read by the
same validation; they counted no rows, so resuming them cuts the CSVs by step instead.
"""
from __future__ import annotations

import io
import json
import math
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import save as safetensors_bytes

from nlstudio.crashpoints import crashpoint
from nlstudio.fileio import fsync_dir, write_new_file
from nlstudio.runs.layout import (CHECKPOINT_FILE, CHECKPOINTS_DIR, CSV_FILES, MODEL_FILE,
                                  RunError)
from nlstudio.runs.weights import weights_step
from nlstudio.untrusted import MANIFEST_CAP, FileRefused, read_bytes, regular_file_size

MANIFEST_FILE = "checkpoint.json"
STATE_FILE = "state.pt"
FORMAT = "nlstudio.checkpoint"
VERSION = 2
LEGACY_FORMAT = 1
MAX_STEP = 10**12
_STEP_DIR = re.compile(r"step-(\d{1,15})")
#: state.pt holds the optimizer's moments: at most a few times the weights, plus the RNG.
STATE_SLACK = 16 << 20


@dataclass(frozen=True)
class Checkpoint:
    """A validated checkpoint (its state file is read on demand, see :meth:`load_state`)."""

    step: int
    path: Path  # the checkpoint folder, or an older folder's checkpoint.pt
    weights: Path
    world_size: int = 1
    wall_s: float = 0.0
    tokens_per_s: float = 0.0
    updates: dict[str, int] = field(default_factory=dict)
    base_dir: str = ""
    rows: dict[str, tuple[int, int]] | None = None  # file -> (bytes, rows); None: older layout
    sizes: dict[str, int] = field(default_factory=dict)  # file -> bytes (newer layout)
    _legacy_state: dict | None = field(default=None, repr=False, compare=False)

    @property
    def legacy(self) -> bool:
        return self.rows is None

    @property
    def state_path(self) -> Path:
        return self.path if self.legacy else self.path / STATE_FILE

    def load_state(self) -> dict:
        """``{"optimizer": state_dict, "rng": {"torch": ByteTensor, "cuda": [...]}}``, loaded
        with ``weights_only=True`` (a crafted pickle is refused without running)."""
        if self._legacy_state is not None:
            return {"optimizer": self._legacy_state.get("optimizer") or {}, "rng": {}}
        state = _torch_load(self.state_path, self.sizes.get(STATE_FILE, 0))
        if not isinstance(state, dict) or not isinstance(state.get("optimizer"), dict) \
                or not isinstance(state.get("rng"), dict):
            raise RunError(self.state_path, "not an NL Studio training state (expected "
                                            "optimizer and rng)")
        return state


# ---- writing -------------------------------------------------------------------------------
def step_dir_name(step: int) -> str:
    return f"step-{int(step):012d}"


def write_checkpoint(run_dir: Path, step: int, *, weights: dict, optimizer: dict, rng: dict,
                     info: dict, rows: dict[str, tuple[int, int]]) -> Path:
    """Writes the checkpoint of ``step`` (see the module doc) and returns its folder.
    ``info``: world_size, wall_s, tokens_per_s, updates, base_dir."""
    folder = Path(run_dir) / CHECKPOINTS_DIR
    folder.mkdir(exist_ok=True)
    name = step_dir_name(step)
    tmp = folder / f".tmp-{name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        model_bytes = safetensors_bytes(weights, metadata={"step": str(int(step)),
                                                           "format": "nlstudio.weights"})
        write_new_file(tmp / MODEL_FILE, model_bytes, "checkpoint.weights")
        buffer = io.BytesIO()
        torch.save({"optimizer": optimizer, "rng": rng}, buffer)
        state_bytes = buffer.getvalue()
        write_new_file(tmp / STATE_FILE, state_bytes, "checkpoint.state")
        manifest = {"format": FORMAT, "version": VERSION, "step": int(step),
                    "world_size": int(info.get("world_size", 1)),
                    "wall_s": float(info.get("wall_s", 0.0)),
                    "tokens_per_s": float(info.get("tokens_per_s", 0.0)),
                    "updates": {str(k): int(v) for k, v in (info.get("updates") or {}).items()},
                    "base_dir": str(info.get("base_dir") or ""),
                    "rows": {n: [int(b), int(r)] for n, (b, r) in rows.items()},
                    "files": {MODEL_FILE: len(model_bytes), STATE_FILE: len(state_bytes)}}
        write_new_file(tmp / MANIFEST_FILE, (json.dumps(manifest, indent=1) + "\n").encode(),
                       "checkpoint.manifest")
        fsync_dir(tmp)
        crashpoint("checkpoint.commit")
        final = folder / name
        if final.exists():  # the same step again (a resume stopped at once): move it aside
            os.rename(final, folder / f".old-{name}-{os.getpid()}")
        os.rename(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    fsync_dir(folder)
    crashpoint("checkpoint.link")
    _link_top_level_weights(Path(run_dir), final / MODEL_FILE)
    _prune(folder, keep=name)
    legacy = Path(run_dir) / CHECKPOINT_FILE
    if legacy.exists():  # an older folder's checkpoint, now superseded
        legacy.unlink()
    return final


def _link_top_level_weights(run_dir: Path, weights: Path) -> None:
    """``run_dir/model.safetensors`` becomes (atomically) the newest checkpoint's weights: a
    hard link where the file system has them, else a copy."""
    target = run_dir / MODEL_FILE
    tmp = run_dir / f".{MODEL_FILE}.{os.getpid()}.tmp"
    tmp.unlink(missing_ok=True)
    try:
        os.link(weights, tmp)
    except OSError:
        shutil.copyfile(weights, tmp)
    os.replace(tmp, target)
    fsync_dir(run_dir)


def _prune(folder: Path, keep: str) -> None:
    for entry in list(folder.iterdir()):
        if entry.name == keep:
            continue
        if _STEP_DIR.fullmatch(entry.name):
            doomed = folder / f".old-{entry.name}-{os.getpid()}"
            os.rename(entry, doomed)  # out of sight first: a reader never sees half a folder
            crashpoint("checkpoint.prune")
            shutil.rmtree(doomed, ignore_errors=True)
        elif entry.name.startswith(".old-"):
            shutil.rmtree(entry, ignore_errors=True)


def settle(run_dir: Path, ckpt: Checkpoint) -> None:
    """Finishes what a writer killed after committing ``ckpt`` left undone: the top-level
    ``model.safetensors`` becomes its weights (a kill between the rename and the link left the
    previous step's there) and older checkpoint folders go. Only the run's writer calls this,
    on a resume, before anything else is written."""
    if ckpt.legacy:
        return
    target = Path(run_dir) / MODEL_FILE
    try:
        linked = target.is_file() and os.path.samefile(target, ckpt.weights)
    except OSError:
        linked = False
    if not linked:
        _link_top_level_weights(Path(run_dir), ckpt.weights)
    _prune(ckpt.path.parent, keep=ckpt.path.name)


def remove_temporaries(run_dir: Path) -> list[str]:
    """Removes what a killed writer left: temporary checkpoint folders, folders being pruned,
    temporary files of atomic writes. Only the run's (single) writer calls this."""
    removed = []
    folder = Path(run_dir) / CHECKPOINTS_DIR
    if folder.is_dir():
        for entry in folder.iterdir():
            if entry.name.startswith((".tmp-", ".old-")):
                shutil.rmtree(entry, ignore_errors=True)
                removed.append(entry.name)
    for entry in Path(run_dir).iterdir():
        if entry.name.startswith(".") and entry.name.endswith(".tmp") and entry.is_file():
            entry.unlink(missing_ok=True)
            removed.append(entry.name)
    return removed


# ---- reading -------------------------------------------------------------------------------
def latest_checkpoint(run_dir: str | os.PathLike) -> Checkpoint | None:
    """The newest complete checkpoint of a run, validated; None if it has none yet (a run
    killed before its first checkpoint continues from step 0). RunError if the newest one is
    damaged: never silently an older one."""
    run_dir = Path(run_dir)
    folder = run_dir / CHECKPOINTS_DIR
    steps = []
    if folder.is_dir():
        try:
            entries = list(os.scandir(folder))
        except OSError as exc:
            raise RunError(folder, f"cannot be listed ({exc.strerror or exc})") from None
        for entry in entries:
            m = _STEP_DIR.fullmatch(entry.name)
            if m:
                steps.append((int(m.group(1)), entry.name))
    if steps:
        _, name = max(steps)
        return _read_folder(folder / name)
    if os.path.lexists(run_dir / CHECKPOINT_FILE):
        return _read_legacy(run_dir)
    return None


def _read_folder(path: Path) -> Checkpoint:
    manifest_path = path / MANIFEST_FILE
    try:
        raw = read_bytes(manifest_path, MANIFEST_CAP)
        doc = json.loads(raw.decode("utf-8"), parse_constant=_no_constants)
    except FileNotFoundError:
        raise RunError(manifest_path, "missing: the checkpoint folder is incomplete") from None
    except FileRefused as exc:
        raise RunError(manifest_path, exc.reason) from None
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise RunError(manifest_path, f"not valid JSON ({str(exc)[:200]})") from None
    check = _Fields(manifest_path, doc)
    if doc.get("format") != FORMAT or doc.get("version") != VERSION:
        raise RunError(manifest_path, f"not an NL Studio checkpoint (format "
                                      f"{check.show(doc.get('format'))}, version "
                                      f"{check.show(doc.get('version'))})")
    step = check.int("step", 0, MAX_STEP)
    m = _STEP_DIR.fullmatch(path.name)
    if m is None or int(m.group(1)) != step:
        raise RunError(manifest_path, f"step {step} does not match its folder {path.name}")
    rows_doc = check.dict("rows")
    rows = {}
    for name in CSV_FILES:
        pair = rows_doc.get(name)
        if not (isinstance(pair, list) and len(pair) == 2 and all(_is_count(v) for v in pair)):
            raise RunError(manifest_path, f"rows.{name}: must be [bytes, rows], two "
                                          "non-negative integers")
        rows[name] = (pair[0], pair[1])
    files = check.dict("files")
    sizes = {}
    for name in (MODEL_FILE, STATE_FILE):
        if not _is_count(files.get(name)):
            raise RunError(manifest_path, f"files.{name}: must be a byte count")
        sizes[name] = files[name]
        try:
            actual = regular_file_size(path / name)
        except FileNotFoundError:
            raise RunError(path / name, "missing: the checkpoint folder is incomplete") from None
        except FileRefused as exc:
            raise RunError(path / name, exc.reason) from None
        if actual != sizes[name]:
            raise RunError(path / name, f"holds {actual} bytes, its checkpoint.json says "
                                        f"{sizes[name]}: the file was changed or cut")
    if sizes[STATE_FILE] > 4 * sizes[MODEL_FILE] + STATE_SLACK:
        raise RunError(path / STATE_FILE, "is far larger than the weights' optimizer state "
                                          "could be")
    return Checkpoint(step=step, path=path, weights=path / MODEL_FILE,
                      world_size=check.int("world_size", 1, 1 << 20),
                      wall_s=check.float("wall_s"), tokens_per_s=check.float("tokens_per_s"),
                      updates=check.updates(), base_dir=check.str("base_dir"),
                      rows=rows, sizes=sizes)


def _read_legacy(run_dir: Path) -> Checkpoint:
    path = run_dir / CHECKPOINT_FILE
    weights = run_dir / MODEL_FILE
    try:
        cap = 3 * regular_file_size(weights) + STATE_SLACK
    except (FileNotFoundError, FileRefused):
        cap = STATE_SLACK
    ckpt = _torch_load(path, cap)
    if not isinstance(ckpt, dict) or ckpt.get("format") != LEGACY_FORMAT:
        shown = _Fields.show(ckpt.get("format")) if isinstance(ckpt, dict) else "?"
        raise RunError(path, f"not an NL Studio checkpoint (format {shown})")
    check = _Fields(path, ckpt)
    step = check.int("step", 0, MAX_STEP)
    saved = weights_step(weights)  # the two files were written one after the other
    if saved != step:
        raise RunError(path, f"is of step {step} but {MODEL_FILE} of step {saved} (the run was "
                             "killed between the two writes of an older NL Studio): the two "
                             "cannot be resumed together")
    world = check.int("world_size", 1, 1 << 20) if "world_size" in ckpt else 1
    if not isinstance(ckpt.get("optimizer", {}), dict):
        raise RunError(path, "optimizer: must be an optimizer state (a dict)")
    extra = _Fields(path, check.dict("extra") if "extra" in ckpt else {}, prefix="extra.")
    return Checkpoint(step=step, path=path, weights=weights, world_size=world,
                      wall_s=extra.float("wall_s"), updates=extra.updates(),
                      base_dir=extra.str("base_dir"), rows=None,
                      _legacy_state={"optimizer": ckpt.get("optimizer") or {}})


def _torch_load(path: Path, cap: int):
    try:
        data = read_bytes(path, cap)
    except FileNotFoundError:
        raise RunError(path, "missing") from None
    except FileRefused as exc:
        raise RunError(path, exc.reason) from None
    try:
        return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - whatever torch raises for a bad or crafted file
        raise RunError(path, f"refused: not a plain NL Studio checkpoint "
                             f"({type(exc).__name__}); checkpoints are loaded without running "
                             "code") from None


def _no_constants(name: str):
    raise ValueError(f"{name} is not a JSON number")


def _is_count(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**62


class _Fields:
    """Typed access to a checkpoint's fields: each wrong one is a RunError naming it."""

    def __init__(self, path: Path, doc, prefix: str = ""):
        if not isinstance(doc, dict):
            raise RunError(path, f"{prefix.rstrip('.') or 'the checkpoint'}: must be an object")
        self.path, self.doc, self.prefix = path, doc, prefix

    @staticmethod
    def show(value) -> str:
        text = repr(value)
        return text if len(text) <= 40 else text[:37] + "..."

    def _bad(self, key: str, what: str):
        return RunError(self.path, f"{self.prefix}{key}: must be {what} (got "
                                   f"{self.show(self.doc.get(key))})")

    def int(self, key: str, low: int, high: int) -> int:
        value = self.doc.get(key)
        if not (isinstance(value, int) and not isinstance(value, bool) and low <= value <= high):
            raise self._bad(key, f"an integer from {low} to {high}")
        return value

    def float(self, key: str) -> float:
        value = self.doc.get(key, 0.0)
        if isinstance(value, bool) or not isinstance(value, (int, float)) \
                or not math.isfinite(value) or value < 0:
            raise self._bad(key, "a finite non-negative number")
        return float(value)

    def str(self, key: str) -> str:
        value = self.doc.get(key, "")
        if not isinstance(value, str) or len(value) > 4096:
            raise self._bad(key, "a path (text)")
        return value

    def dict(self, key: str) -> dict:
        value = self.doc.get(key)
        if not isinstance(value, dict):
            raise self._bad(key, "an object")
        return value

    def updates(self) -> dict[str, int]:
        value = self.doc.get("updates", {})
        if not isinstance(value, dict) or not all(
                isinstance(k, str) and _is_count(v) for k, v in value.items()):
            raise self._bad("updates", "an object of level ids to update counts")
        return dict(value)
