"""Use a trained model: read a prompt as a stream, then sample from it one token per call.

    for token in nlstudio.generate("runs/charlm-…", prompt="def ", tokens=200, seed=0):
        ...                                    # token ids, as they are sampled

The prompt is fed as a *stream* (in calls of :data:`PROMPT_CHUNK` tokens, the model's state
carried from call to call), not as a window: a prompt longer than the sequences the model was
trained on works, and every in-context level keeps learning while the model reads and writes
(with ``targets=None`` a position's target is the stream's next token, so a CMS level with the
``task`` objective writes with the loss of the tokens read, sampled ones included; see
``NestedModel._stream``). Streams do not depend on how they are cut, so this gives the logits
of one call over prompt + generated tokens.

Byte-level tasks (``task.byte_level``) take text prompts (their UTF-8 bytes) and decode what
they generate with :class:`Utf8Stream`; other token tasks take token ids (``"3 17 5"``).
Feature-input tasks (``digits_stream``) have nothing to generate.
"""
from __future__ import annotations

import codecs
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

import torch
from torch import Tensor

from nlstudio.printable import one_line, printable
from nlstudio.project import ProjectError
from nlstudio.runs import RunError, load_run, load_weights_into
from nlstudio.untrusted import FileRefused, read_bytes

PROMPT_CHUNK = 256  # tokens per model call while reading a prompt (any cut gives the same)
MAX_PROMPT_BYTES = 1 << 20  # a prompt file larger than this is refused (1 MiB)


class GenerationError(ValueError):
    """Input that generation cannot use; the message is one line naming what is wrong."""


@dataclass
class LoadedModel:
    """A trained model ready to use, with the task that says what its tokens mean."""

    model: torch.nn.Module
    task: object  # nlstudio.tasks.Task
    path: Path
    step: int | None  # the training step of the weights (None: unknown, an export)
    project: object = None  # nlstudio.project.Project the model was built from
    base_dir: Path | None = None  # where the project's relative paths resolve

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def byte_level(self) -> bool:
        return bool(getattr(self.task, "byte_level", False))

    @property
    def token_inputs(self) -> bool:
        return self.task.vocab_size is not None


def load_model(path: str | os.PathLike, device: str | torch.device = "cpu") -> LoadedModel:
    """The model of a run folder (its newest checkpoint's weights) or of an exported model
    folder (``model.safetensors`` + ``project.nlproj``), in eval mode, with its task. Raises
    :class:`GenerationError` naming the folder or file at fault."""
    try:
        run = load_run(path)
        model, task = run.build_model()
        load_weights_into(model, run.weights_file)
    except (RunError, ProjectError, FileRefused) as exc:
        raise GenerationError(printable(exc, 2000)) from None
    except OSError as exc:
        raise GenerationError(one_line(exc.filename or path, exc.strerror or exc)) from None
    model.to(device).eval()
    return LoadedModel(model, task, Path(path), run.checkpoint_step, run.project, run.base_dir)


# ---- prompts ---------------------------------------------------------------------------------
def read_prompt_file(path: str | os.PathLike, limit: int = MAX_PROMPT_BYTES) -> bytes:
    """The bytes of a prompt file: a regular file of at most ``limit`` bytes, read with the
    rules for untrusted files (``nlstudio.untrusted``: a FIFO, a device or a folder is refused
    before it is opened; never more than ``limit`` bytes are read). Anything else raises
    :class:`GenerationError`, one line naming the file."""
    try:
        return read_bytes(path, limit)
    except FileRefused as exc:
        raise GenerationError(one_line(path, f"the prompt file {exc.reason}")) from None
    except OSError as exc:
        raise GenerationError(one_line(path, "cannot read the prompt file "
                                             f"({exc.strerror or exc})")) from None


def parse_token_ids(text: str, vocab_size: int, source: str = "the prompt") -> list[int]:
    """Token ids written as integers separated by spaces or commas (``"3 17, 5"``)."""
    ids = []
    for word in re.split(r"[\s,]+", text.strip()):
        if not word:
            continue
        try:
            value = int(word)
        except ValueError:
            raise GenerationError(f"{source}: {printable(word[:20])!r} is not a token id (this task's "
                                  f"prompts are token ids 0-{vocab_size - 1}, separated by "
                                  f"spaces)") from None
        if not 0 <= value < vocab_size:
            raise GenerationError(f"{source}: token id {value} is outside 0-{vocab_size - 1}")
        ids.append(value)
    return ids


def encode_prompt(task, prompt: str | bytes | Sequence[int], source: str = "the prompt"
                  ) -> list[int]:
    """The token ids of ``prompt`` for ``task``: UTF-8 bytes of text for a byte-level task,
    ids written in text (or given as ints) for other token tasks. An empty prompt, a feature
    task, or ids out of range raise :class:`GenerationError`."""
    vocab = task.vocab_size
    if vocab is None:
        raise GenerationError(f"task {task.name!r} reads feature vectors, not tokens: there is "
                              f"nothing to generate or to prompt with")
    if isinstance(prompt, (bytes, bytearray)):
        ids = list(prompt) if task.byte_level else parse_token_ids(
            bytes(prompt).decode("utf-8", errors="replace"), vocab, source)
    elif isinstance(prompt, str):
        ids = list(prompt.encode("utf-8")) if task.byte_level else \
            parse_token_ids(prompt, vocab, source)
    else:
        ids = [int(t) for t in prompt]
        bad = [t for t in ids if not 0 <= t < vocab]
        if bad:
            raise GenerationError(f"{source}: token id {bad[0]} is outside 0-{vocab - 1}")
    if not ids:
        raise GenerationError(f"{source} is empty: give at least one token to start from "
                              f"(these models have no start-of-text token)")
    return ids


class Utf8Stream:
    """Bytes in, text out as soon as it is complete: a character split across tokens appears
    when its last byte arrives; invalid bytes become U+FFFD."""

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def feed(self, token: int) -> str:
        return self._decoder.decode(bytes((int(token),)))

    def flush(self) -> str:
        return self._decoder.decode(b"", final=True)


# ---- sampling --------------------------------------------------------------------------------
def sample_token(logits: Tensor, temperature: float, top_k: int | None,
                 generator: torch.Generator) -> int:
    """One token from next-token ``logits [V]``: the argmax for ``temperature == 0``, else a
    draw from softmax(logits / temperature) restricted to the ``top_k`` most likely tokens
    (all of them for None), with ``generator`` (CPU) so that a seed fixes the draw."""
    logits = logits.detach().to("cpu", torch.float32)
    if temperature == 0:
        return int(logits.argmax())
    scaled = logits / float(temperature)
    if top_k is not None and top_k < scaled.numel():
        kth = torch.topk(scaled, top_k).values[-1]
        scaled = scaled.masked_fill(scaled < kth, float("-inf"))
    probs = torch.softmax(scaled, dim=-1)
    return int(torch.multinomial(probs, 1, generator=generator))


@dataclass
class Step:
    """One generated token and the next-token logits (``[V]``, CPU float32) it was drawn
    from."""

    token: int
    logits: Tensor


def check_options(tokens: int, temperature: float, top_k: int | None) -> None:
    if isinstance(tokens, bool) or not isinstance(tokens, int) or tokens < 1:
        raise GenerationError(f"the number of tokens to generate must be at least 1, got "
                              f"{tokens}")
    if not (temperature >= 0 and temperature < float("inf")):
        raise GenerationError(f"the temperature must be 0 (greedy) or positive, got "
                              f"{temperature}")
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int)
                              or top_k < 1):
        raise GenerationError(f"top-k must be at least 1, got {top_k}")


def stream_steps(model, prompt_ids: Sequence[int], *, tokens: int, temperature: float = 1.0,
                 top_k: int | None = None, seed: int = 0,
                 stop: Callable[[], bool] | None = None) -> Iterator[Step]:
    """Reads ``prompt_ids`` as a stream, then yields ``tokens`` sampled tokens one model call
    each (the state flows: every level keeps learning). ``stop()`` returning True ends the
    stream early (checked between calls)."""
    check_options(tokens, temperature, top_k)
    if not prompt_ids:
        raise GenerationError("the prompt is empty: give at least one token to start from")
    device = next(model.parameters()).device
    generator = torch.Generator().manual_seed(int(seed))
    ids = torch.tensor([list(prompt_ids)], dtype=torch.long, device=device)
    with torch.no_grad():
        state = None
        for start in range(0, ids.shape[1], PROMPT_CHUNK):
            if stop is not None and stop():
                return
            logits, state = model(ids[:, start:start + PROMPT_CHUNK], state)
        last = logits[0, -1]
        for i in range(tokens):
            if stop is not None and stop():
                return
            token = sample_token(last, temperature, top_k, generator)
            yield Step(token, last.detach().to("cpu", torch.float32))
            if i + 1 < tokens:
                logits, state = model(torch.tensor([[token]], device=device), state)
                last = logits[0, -1]


def generate(source: str | os.PathLike | LoadedModel, prompt: str | bytes | Sequence[int], *,
             tokens: int = 200, temperature: float = 1.0, top_k: int | None = None,
             seed: int = 0, device: str | torch.device = "cpu",
             stop: Callable[[], bool] | None = None) -> Iterator[int]:
    """Token ids sampled from a trained model after ``prompt`` (module docstring), yielded as
    they come. ``source``: a run folder, an exported model folder, or a :class:`LoadedModel`.
    Bad input raises :class:`GenerationError` here, before the first token."""
    check_options(tokens, temperature, top_k)
    loaded = source if isinstance(source, LoadedModel) else load_model(source, device)
    ids = encode_prompt(loaded.task, prompt)
    steps = stream_steps(loaded.model, ids, tokens=tokens, temperature=temperature,
                         top_k=top_k, seed=seed, stop=stop)
    return (step.token for step in steps)


__all__ = ["GenerationError", "LoadedModel", "load_model", "read_prompt_file",
           "parse_token_ids", "encode_prompt", "Utf8Stream", "sample_token", "Step",
           "stream_steps", "generate", "PROMPT_CHUNK", "MAX_PROMPT_BYTES"]
