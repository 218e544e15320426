"""Weights files (safetensors, never pickle): read only from a regular file no larger than the
model's tensors plus a header, loaded strictly (every tensor must match in name and shape), and
labelled by the step in their own metadata."""
from __future__ import annotations

import json
import os
import struct
from pathlib import Path

from safetensors.torch import load as load_bytes

from nlstudio.runs.layout import MODEL_FILE, RunError
from nlstudio.untrusted import FileRefused, read_bytes, regular_file_size

#: Bytes a safetensors header may take beyond the tensors themselves.
HEADER_SLACK = 1 << 20


def weights_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The metadata of a safetensors file (its header only, at most HEADER_SLACK bytes)."""
    path = Path(path)
    try:
        head = read_bytes(path, 8, truncate=True)
        (length,) = struct.unpack("<Q", head) if len(head) == 8 else (None,)
        if length is None or length > HEADER_SLACK:
            raise RunError(path, "not a safetensors file (bad header length)")
        header = json.loads(read_bytes(path, length, offset=8, truncate=True))
    except FileNotFoundError:
        raise RunError(path, "no weights saved yet") from None
    except FileRefused as exc:
        raise RunError(path, exc.reason) from None
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise RunError(path, "not a safetensors file (unreadable header)") from None
    meta = header.get("__metadata__") if isinstance(header, dict) else None
    return {str(k): str(v) for k, v in meta.items()} if isinstance(meta, dict) else {}


def weights_step(path: str | os.PathLike) -> int | None:
    """The step a weights file was saved at (its metadata), None if it does not say."""
    value = weights_metadata(path).get("step", "")
    return int(value) if value.isdigit() and len(value) < 16 else None


def load_weights_into(model, weights: str | os.PathLike) -> int | None:
    """Loads a safetensors file (or a run folder's model.safetensors) into ``model``: strict,
    every tensor must match in name and shape. The file must be a regular file no larger than
    the model's tensors plus a header. Returns the step in its metadata (None if absent)."""
    weights = Path(weights)
    if weights.is_dir():
        weights = weights / MODEL_FILE
    expected = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    try:
        regular_file_size(weights, expected + HEADER_SLACK)
        data = read_bytes(weights, expected + HEADER_SLACK)
    except FileNotFoundError:
        raise RunError(weights, "no weights saved yet") from None
    except FileRefused as exc:
        raise RunError(weights, f"{exc.reason}; the project's model has {expected} bytes of "
                                "tensors") from None
    try:
        state = load_bytes(data)
    except Exception as exc:  # noqa: BLE001 - safetensors raises its own error types
        raise RunError(weights, f"not a readable safetensors file ({exc})") from None
    del data
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:
        raise RunError(weights, f"weights do not fit the project's model ({exc})") from None
    missing = [m for m in missing if not _is_tied_alias(model, m, state)]
    if missing or unexpected:
        raise RunError(weights, f"weights do not match the project (missing {missing[:3]}, "
                                f"unexpected {unexpected[:3]})")
    return weights_step(weights)


def _is_tied_alias(model, name: str, state: dict) -> bool:
    """A missing key that shares storage with a saved one (tied embedding/head)."""
    params = dict(model.named_parameters(remove_duplicate=False))
    target = params.get(name)
    if target is None:
        return False
    return any(p is target and other in state for other, p in params.items() if other != name)
