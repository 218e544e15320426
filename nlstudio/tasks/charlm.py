"""Byte-level language modelling on a user's text file or on text that ships with Python.

Tokens are the bytes of the UTF-8 text (``vocab_size = 256``), so any file works; the target
at every position is the next byte. The metric is bits per character, ``bpc`` (strictly bits per
byte: the same for ASCII text): the cross-entropy in bits, lower is better; a uniform model
scores exactly 8.

Corpora (each a list of documents; the last 10 % of every document is held out):

- **corpus A** is the user's ``text_file`` (a path relative to the project file's folder, the
  task's ``base_dir``), or by default Python source: the standard-library modules
  :data:`STDLIB_SOURCES` (found under ``sysconfig.get_paths()["stdlib"]``; missing ones are
  skipped, none at all is an error).
- **corpus B** is English prose: every help topic of ``pydoc_data.topics`` (the reference text
  behind ``help("if")``, shipped with the standard library), one document per topic, in sorted
  order.

With ``continual`` the first half of the run (``total_steps``, the constructor keyword the
trainer fills with ``train.steps``) trains on corpus A, the rest on corpus B; evaluation reports
every corpus trained so far, which shows how much of A is forgotten while learning B. Without it
the run trains on corpus A only.
"""
from __future__ import annotations

import importlib
import math
import sysconfig
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path, PurePosixPath, PureWindowsPath

import numpy as np
import torch.nn.functional as F
from pydantic import Field, field_validator
from torch import Tensor

from nlstudio.tasks import register
from nlstudio.tasks._util import BundledTask, PhaseSchedule, TaskConfigError, long_tensor
from nlstudio.tasks.base import IGNORE, Batch, EvalRow, TaskParams
from nlstudio.untrusted import DATA_FILE_CAP, FileRefused, confined, read_bytes

#: Corpus A by default: small, stable pure-Python modules present in CPython 3.10 to 3.13.
STDLIB_SOURCES = ("bisect.py", "colorsys.py", "fnmatch.py", "fractions.py", "glob.py",
                  "heapq.py", "queue.py", "sched.py", "shlex.py", "textwrap.py")
HELD_OUT = 0.10
EVAL_WINDOWS = 16  # held-out windows of seq_len scored per corpus, at most
CORPUS_NAMES = ("corpus A", "corpus B")


class CharLMParams(TaskParams):
    text_file: str | None = Field(
        None, min_length=1,
        description="UTF-8 text to model, relative to the project file's folder "
                    "(empty: Python standard-library source)")
    continual: bool = Field(
        False, description="train on corpus A for the first half of the run, then on "
                           "corpus B (English prose)")

    @field_validator("text_file")
    @classmethod
    def _relative(cls, v: str | None) -> str | None:
        if v is None:
            return v
        if (PurePosixPath(v).is_absolute() or PureWindowsPath(v).is_absolute()
                or PureWindowsPath(v).drive or v.startswith("~")):
            raise ValueError("must be a path relative to the project file's folder "
                             "(project files carry no absolute paths)")
        return v


@dataclass(frozen=True)
class Corpus:
    name: str
    train: np.ndarray      # uint8, the first 90 % of every document, concatenated
    held_out: np.ndarray   # uint8, the last 10 % of every document, concatenated


def split_documents(name: str, documents: list[bytes]) -> Corpus:
    train, held = [], []
    for doc in documents:
        cut = len(doc) - math.ceil(len(doc) * HELD_OUT)
        train.append(doc[:cut])
        held.append(doc[cut:])
    as_array = lambda parts: np.frombuffer(b"".join(parts), dtype=np.uint8)  # noqa: E731
    return Corpus(name, as_array(train), as_array(held))


@lru_cache(maxsize=None)
def stdlib_sources() -> tuple[bytes, ...]:
    """The bytes of every file of :data:`STDLIB_SOURCES` this Python has."""
    root = Path(sysconfig.get_paths()["stdlib"])
    docs = tuple((root / f).read_bytes() for f in STDLIB_SOURCES if (root / f).is_file())
    if not docs:
        raise FileNotFoundError(f"none of the standard-library files {', '.join(STDLIB_SOURCES)} "
                                f"exists under {root}: set task.text_file instead")
    return docs


@lru_cache(maxsize=None)
def stdlib_prose() -> tuple[bytes, ...]:
    """The help topics of ``pydoc_data.topics``, one document each, sorted by topic."""
    try:
        topics = importlib.import_module("pydoc_data.topics").topics
    except ImportError as exc:
        raise FileNotFoundError("this Python ships without pydoc_data (the English corpus B "
                                "of charlm)") from exc
    return tuple(topics[k].encode("utf-8") for k in sorted(topics))


@register
class CharLMTask(BundledTask):
    name = "charlm"
    title = "Character-level language model"
    summary = ("Predict the next byte of a text (yours, or Python's own source then English "
               "prose): bits per character, and what the first text loses to the second.")
    Params = CharLMParams
    metric_name = "bpc"
    higher_is_better = False
    byte_level = True

    def _setup(self) -> None:
        self.vocab_size = 256
        self.n_outputs = 256
        n_phases = 2 if self.params.continual else 1
        self.schedule = PhaseSchedule(self.name, n_phases, self.total_steps)
        self.corpora = [self._corpus_a()] + ([self._corpus_b()] if n_phases == 2 else [])
        for corpus, field in zip(self.corpora, ("text_file", "continual")):
            for part, data in (("training", corpus.train), ("held-out", corpus.held_out)):
                if len(data) < self.seq_len + 1:
                    raise TaskConfigError(
                        field, f"the {part} part of {corpus.name} has {len(data)} bytes, fewer "
                               f"than seq_len + 1 = {self.seq_len + 1}: use a longer text or a "
                               "shorter train.seq_len")

    def _corpus_a(self) -> Corpus:
        if self.params.text_file is None:
            return split_documents(CORPUS_NAMES[0], list(stdlib_sources()))
        # Untrusted: the path stays inside the project's folder (after '..' and symlinks),
        # and only a regular file of bounded size is read (never a FIFO or /dev/zero).
        name = self.params.text_file
        try:
            path = confined(self.base_dir, name)
            data = read_bytes(path, DATA_FILE_CAP)
        except FileRefused as exc:
            raise TaskConfigError("text_file", f"{name}: {exc.reason}") from None
        except OSError as exc:
            raise TaskConfigError("text_file", f"cannot read {name}: "
                                               f"{exc.strerror or exc}") from None
        return split_documents(CORPUS_NAMES[0], [data])

    def _corpus_b(self) -> Corpus:
        return split_documents(CORPUS_NAMES[1], list(stdlib_prose()))

    def phase(self, step: int) -> str:
        return CORPUS_NAMES[self.schedule.index(step)]

    def batch(self, step: int, batch_size: int, rank: int = 0, world_size: int = 1) -> Batch:
        corpus = self.corpora[self.schedule.index(step)]
        self._note_step(step)
        rng = self.rng(step, rank)
        starts = rng.integers(0, len(corpus.train) - self.seq_len, batch_size)
        window = corpus.train[starts[:, None] + np.arange(self.seq_len + 1)]
        return Batch(long_tensor(window[:, :-1]), long_tensor(window[:, 1:]))

    def held_out_windows(self, corpus: Corpus) -> np.ndarray:
        """Up to :data:`EVAL_WINDOWS` windows of ``seq_len + 1`` bytes, evenly spread over the
        held-out text; consecutive windows share one byte, so no byte is a target twice."""
        T, data = self.seq_len, corpus.held_out
        count = (len(data) - 1) // T
        picks = np.unique(np.linspace(0, count - 1, min(count, EVAL_WINDOWS)).round().astype(int))
        return data[picks[:, None] * T + np.arange(T + 1)]

    def evaluate(self, model, device, step: int | None = None) -> list[EvalRow]:
        seen = self.schedule.seen(self.last_step if step is None else step)
        rows = []
        for corpus in self.corpora[:seen]:
            window = self.held_out_windows(corpus)
            inputs, targets = long_tensor(window[:, :-1]), long_tensor(window[:, 1:])
            logits = self.model_logits(model, inputs, targets, device)
            rows.append(EvalRow(corpus.name, self.metric(logits, targets.to(logits.device))))
        return rows

    def metric(self, logits: Tensor, targets: Tensor) -> float:
        """Bits per character: mean cross-entropy over the targets, in bits."""
        mask = targets != IGNORE
        if not bool(mask.any()):
            return float("nan")
        # Bits per position first, then the mean: a uniform model then scores exactly 8.
        nats = F.cross_entropy(logits[mask].double(), targets[mask], reduction="none")
        return float((nats / math.log(2.0)).mean())
