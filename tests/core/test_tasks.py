"""The bundled tasks: data layout, determinism, validation, metrics and evaluation rows, checked
with hand-built models that follow the call contract (oracles that read only the inputs)."""
from __future__ import annotations

import inspect
import math

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from nlstudio.tasks import IGNORE, TaskParams, all_tasks, get_task

# The registry fills itself only while it is empty: load it before importing task modules
# directly, or the tasks not imported here would be missing from it.
REGISTERED = all_tasks()

from nlstudio.tasks._util import PhaseSchedule, ScoredBatch, TaskConfigError  # noqa: E402
from nlstudio.tasks.charlm import (STDLIB_SOURCES, split_documents, stdlib_prose,  # noqa: E402
                                   stdlib_sources)
from nlstudio.tasks.digits_stream import digits  # noqa: E402
from nlstudio.tasks.needle import FILLER0, NEEDLE, QUERY  # noqa: E402

NAMES = ("mqar", "needle", "kv_stream", "charlm", "digits_stream")
# (task, params, seq_len, constructor keywords): small instances of every task.
SMALL = {
    "mqar": ({}, 64, {}),
    "needle": ({}, 48, {}),
    "kv_stream": ({}, 160, {}),
    "charlm": ({"continual": True}, 64, {"total_steps": 10}),
    "digits_stream": ({}, 16, {"total_steps": 50}),
}


def make(name: str, seed: int = 0, **override):
    params, seq_len, kwargs = SMALL[name]
    params = {**params, **override.pop("params", {})}
    return get_task(name)(params, seq_len=override.pop("seq_len", seq_len), seed=seed,
                          **{**kwargs, **override})


def one_hot_logits(pred: np.ndarray, n: int) -> torch.Tensor:
    logits = torch.full(pred.shape + (n,), -10.0)
    logits.scatter_(-1, torch.from_numpy(pred).long().unsqueeze(-1), 10.0)
    return logits


class LookupOracle:
    """At each token, answers the token that followed its most recent earlier sighting if that
    sighting is at most ``horizon`` tokens back, else ``fallback``. Reads only the inputs."""

    def __init__(self, n_outputs: int, horizon: int | None = None, fallback: int = 0):
        self.n, self.horizon, self.fallback = n_outputs, horizon, fallback
        self.silences: list[tuple] = []

    def __call__(self, inputs, state=None, targets=None, silence=()):
        self.silences.append(tuple(silence))
        x = inputs.cpu().numpy()
        pred = np.full(x.shape, self.fallback)
        for b, row in enumerate(x):
            last: dict[int, int] = {}
            for t, tok in enumerate(row.tolist()):
                p = last.get(tok)
                if p is not None and p + 1 < t and (self.horizon is None or t - p <= self.horizon):
                    pred[b, t] = row[p + 1]
                last[tok] = t
        return one_hot_logits(pred, self.n), state


class ConstantModel:
    def __init__(self, n_outputs: int, answer: int):
        self.n, self.answer = n_outputs, answer

    def __call__(self, inputs, state=None, targets=None, silence=()):
        return one_hot_logits(np.full(tuple(inputs.shape[:2]), self.answer), self.n), state


def loc_of(exc: ValidationError) -> tuple:
    return exc.errors()[0]["loc"]


# ---- every task -----------------------------------------------------------------------------

def test_all_five_tasks_are_registered_with_their_metadata():
    tasks = REGISTERED
    assert set(NAMES) <= set(tasks)
    metrics = {"mqar": "recall", "needle": "retrieval", "kv_stream": "recall", "charlm": "bpc",
               "digits_stream": "accuracy"}
    for name in NAMES:
        cls = tasks[name]
        assert cls.name == name and cls.title and cls.summary.endswith(".")
        assert cls.metric_name == metrics[name]
        assert issubclass(cls.Params, TaskParams)
        assert cls.higher_is_better is (name != "charlm")
        # the trainer passes these keywords when the constructor names them
        accepted = inspect.signature(cls.__init__).parameters
        assert "total_steps" in accepted and "base_dir" in accepted


@pytest.mark.parametrize("name", NAMES)
def test_sizes_and_batch_shapes(name):
    task = make(name)
    b = task.batch(0, 3)
    assert b.targets.shape == (3, task.seq_len) and b.targets.dtype == torch.int64
    valid = b.targets[b.targets != IGNORE]
    assert valid.numel() > 0 and int(valid.min()) >= 0 and int(valid.max()) < task.n_outputs
    if name == "digits_stream":
        assert task.vocab_size is None and task.input_dim == 74 and task.n_outputs == 10
        assert b.inputs.shape == (3, task.seq_len, 74) and b.inputs.dtype == torch.float32
    else:
        assert task.input_dim is None and task.n_outputs == task.vocab_size
        assert b.inputs.shape == (3, task.seq_len) and b.inputs.dtype == torch.int64
        assert int(b.inputs.min()) >= 0 and int(b.inputs.max()) < task.vocab_size


@pytest.mark.parametrize("name", NAMES)
def test_batches_are_a_pure_function_of_seed_step_and_rank(name):
    a, again = make(name), make(name)
    first = a.batch(3, 4, rank=0)
    same = again.batch(3, 4, rank=0)
    assert torch.equal(first.inputs, same.inputs) and torch.equal(first.targets, same.targets)
    for other in (a.batch(2, 4, rank=0), a.batch(3, 4, rank=1), make(name, seed=1).batch(3, 4)):
        assert not torch.equal(first.inputs, other.inputs)


@pytest.mark.parametrize("name", NAMES)
def test_unknown_settings_are_refused(name):
    with pytest.raises(ValidationError) as err:
        make(name, params={"no_such_setting": 1})
    assert loc_of(err.value) == ("no_such_setting",)


class Recorder:
    """A constant model that keeps every input it is shown."""

    def __init__(self, n_outputs: int):
        self.n, self.seen = n_outputs, []

    def __call__(self, inputs, state=None, targets=None, silence=()):
        self.seen.append(inputs.clone())
        return torch.zeros(tuple(inputs.shape[:2]) + (self.n,)), state


def recorded_eval(task) -> list[torch.Tensor]:
    model = Recorder(task.n_outputs)
    rows = task.evaluate(model, "cpu")
    assert rows and all(isinstance(r.metric, float) for r in rows)
    recall = task.recall_by_delay(model, "cpu")
    assert recall is None or all(isinstance(v, float) for v in recall.values())
    return model.seen


@pytest.mark.parametrize("name", NAMES)
def test_evaluation_data_is_fixed(name):
    task = make(name)
    first = recorded_eval(task)
    task.batch(0, 2)
    same_after_training = recorded_eval(task)[:len(first)]
    other_seed = recorded_eval(make(name, seed=5))
    assert all(torch.equal(a, b) for a, b in zip(first, same_after_training))
    if name != "digits_stream":  # its held-out images come from the seed's split
        assert len(first) == len(other_seed)
        assert all(torch.equal(a, b) for a, b in zip(first, other_seed))
    b = task.batch(0, 2)  # held-out data: never one of the training batches
    assert not any(torch.equal(b.inputs, x[:2]) for x in first if x.shape[1:] == b.inputs.shape[1:])


def test_scored_batch_moves_and_survives_a_plain_rebuild():
    b = make("kv_stream").batch(0, 2)
    assert isinstance(b, ScoredBatch)
    moved = b.to("cpu")
    assert torch.equal(moved.score_targets, b.score_targets)
    rebuilt = type(b)(b.inputs[:1], b.targets[:1])  # what a sharding helper does
    assert torch.equal(rebuilt.metric_targets, rebuilt.targets)


def test_phase_schedule_splits_the_run_evenly():
    s = PhaseSchedule("t", 5, 50)
    assert [s.index(k) for k in (0, 9, 10, 49, 60)] == [0, 0, 1, 4, 4]
    assert [s.start(k) for k in range(5)] == [0, 10, 20, 30, 40]
    assert s.seen(None) == 5 and s.seen(25) == 3
    with pytest.raises(ValueError, match="total_steps"):
        PhaseSchedule("t", 2, None).index(0)


# ---- mqar -----------------------------------------------------------------------------------

def test_mqar_layout_queries_ask_context_keys():
    task = make("mqar", params={"num_pairs": 6, "num_queries": 4})
    b = task.batch(1, 8)
    n = 6
    for x, y, s in zip(b.inputs.numpy(), b.targets.numpy(), b.score_targets.numpy()):
        keys, values = x[0:2 * n:2], x[1:2 * n:2]
        assert len(set(keys)) == n and keys.min() >= 1 and keys.max() <= 64
        assert values.min() >= task.value_offset
        answer = dict(zip(keys, values))
        asked = np.flatnonzero(y != IGNORE)
        assert len(asked) == 4 and asked.min() >= 2 * n
        assert len(set(x[asked])) == 4  # each key asked at most once
        assert all(y[t] == answer[x[t]] for t in asked)
        rest = np.setdiff1d(np.arange(2 * n, task.seq_len), asked)
        assert (x[rest] == 0).all()  # blank: the answers are never shown in the query region
        assert np.array_equal(s, y)


def test_mqar_context_targets_train_but_are_not_scored():
    b = make("mqar", params={"context_targets": True}).batch(0, 2)
    y, s, x = b.targets.numpy(), b.score_targets.numpy(), b.inputs.numpy()
    assert np.array_equal(y[:, 0:16:2], x[:, 1:16:2])
    assert (s[:, :16] == IGNORE).all() and (s[:, 16:] == y[:, 16:]).all()


def test_mqar_oracle_recalls_everything_and_a_constant_gets_chance():
    task = make("mqar", params={"value_vocab": 4})
    assert [(r.task, r.metric) for r in task.evaluate(LookupOracle(task.n_outputs), "cpu")] == \
        [("mqar", 1.0)]
    chance = task.evaluate(ConstantModel(task.n_outputs, task.value_offset), "cpu")[0].metric
    assert abs(chance - 0.25) < 0.08
    b = task.batch(0, 4)
    oracle_logits, _ = LookupOracle(task.n_outputs)(b.inputs)
    assert task.metric(oracle_logits, b.targets) == 1.0


@pytest.mark.parametrize("bad, field", [({"num_pairs": 0}, "num_pairs"),
                                        ({"num_pairs": 4, "num_queries": 5}, "num_queries"),
                                        ({"num_pairs": 10, "key_vocab": 9}, "key_vocab"),
                                        ({"value_vocab": 1}, "value_vocab")])
def test_mqar_bad_settings_name_their_field(bad, field):
    with pytest.raises(ValidationError) as err:
        make("mqar", params=bad)
    assert loc_of(err.value) == (field,)


def test_mqar_refuses_a_sequence_too_short():
    with pytest.raises(TaskConfigError) as err:
        make("mqar", params={"num_pairs": 30}, seq_len=64)
    assert err.value.field == "num_pairs" and "seq_len >= 90" in str(err.value)


# ---- needle ---------------------------------------------------------------------------------

class NeedleOracle:
    """Finds the NEEDLE marker and reads the passkey after it; answers it after QUERY."""

    def __init__(self, task):
        self.task = task

    def __call__(self, inputs, state=None, targets=None, silence=()):
        x = inputs.numpy()
        L = self.task.params.passkey_len
        pred = np.zeros(x.shape, dtype=np.int64)
        for b, row in enumerate(x):
            start = int(np.flatnonzero(row == NEEDLE)[0])
            q = int(np.flatnonzero(row == QUERY)[0])
            pred[b, q:q + L] = row[start + 1:start + 1 + L]
        return one_hot_logits(pred, self.task.n_outputs), state


@pytest.mark.parametrize("filler", ["pattern", "random"])
def test_needle_layout(filler):
    task = make("needle", params={"filler": filler, "passkey_len": 4})
    L, H = 4, task.seq_len - 4
    assert task.needle_start(0.0) == 0 and task.needle_start(1.0) == H - L - 1
    b = task.batch(2, 6)
    for x, y in zip(b.inputs.numpy(), b.targets.numpy()):
        start = int(np.flatnonzero(x == NEEDLE)[0])
        key = x[start + 1:start + 1 + L]
        assert (key < 10).all() and x[H] == QUERY and list(x[H + 1:]) == list(key[:-1])
        assert list(y[H:]) == list(key) and (y[:H] == IGNORE).all()
        filler_pos = np.setdiff1d(np.arange(H), np.arange(start, start + L + 1))
        assert (x[filler_pos] >= FILLER0).all()
        if filler == "pattern":
            assert ((np.diff(x[:start]) % 16) == 1).all()


def test_needle_evaluate_rows_per_depth_oracle_and_chance():
    task = make("needle", params={"depths": [0.0, 0.25, 1.0]})
    rows = task.evaluate(NeedleOracle(task), "cpu")
    assert [(r.task, r.metric) for r in rows] == [("depth 0", 1.0), ("depth 0.25", 1.0),
                                                  ("depth 1", 1.0)]
    chance = task.evaluate(ConstantModel(task.n_outputs, 3), "cpu")
    assert all(r.metric < 0.3 for r in chance)
    recorder = Recorder(task.n_outputs)
    task.evaluate(recorder, "cpu")
    (x,) = recorder.seen
    starts = (x == NEEDLE).int().argmax(dim=1).reshape(3, -1)  # rows grouped by depth
    for depth, row_starts in zip((0.0, 0.25, 1.0), starts):
        assert (row_starts == int(task.needle_start(depth))).all()


@pytest.mark.parametrize("bad, field", [({"depths": [0.5, 1.5]}, "depths"),
                                        ({"depths": []}, "depths"),
                                        ({"depths": [0.5, 0.5]}, "depths"),
                                        ({"passkey_len": 0}, "passkey_len"),
                                        ({"filler": "lorem"}, "filler"),
                                        ({"filler_vocab": 0}, "filler_vocab")])
def test_needle_bad_settings_name_their_field(bad, field):
    with pytest.raises(ValidationError) as err:
        make("needle", params=bad)
    assert loc_of(err.value) == (field,)
    with pytest.raises(TaskConfigError) as short:
        make("needle", params={"passkey_len": 30})
    assert short.value.field == "passkey_len"


# ---- kv_stream ------------------------------------------------------------------------------

def segment_keys(task, row: np.ndarray) -> list[frozenset]:
    S = task.params.segment_len
    return [frozenset(row[i:i + S:2].tolist()) for i in range(0, len(row), S)]


def test_kv_stream_layout_and_scoring():
    task = make("kv_stream")
    K = task.params.num_keys
    b = task.batch(0, 4)
    for x, y, s in zip(b.inputs.numpy(), b.targets.numpy(), b.score_targets.numpy()):
        keys, values = x[0::2], x[1::2]
        assert keys.max() < K and values.min() >= K
        assert np.array_equal(y[0::2], values) and (y[1::2] == IGNORE).all()
        fact: dict[int, int] = {}
        for t, (k, v) in enumerate(zip(keys, values)):
            assert fact.setdefault(k, v) == v  # a key keeps its value for the whole stream
            seen_before = k in keys[:t]
            assert (s[2 * t] == v) if seen_before else (s[2 * t] == IGNORE)
        assert (s[1::2] == IGNORE).all()
        # each segment shows exactly one mapping; mappings are disjoint key sets
        segs = segment_keys(task, x)
        assert all(len(g) == task.params.pairs_per_mapping for g in segs)
        assert all(a == c or not (a & c) for a in segs for c in segs)


def test_kv_stream_schedules():
    fixed = make("kv_stream", params={"schedule": "ABCA"}, seq_len=256)
    segs = segment_keys(fixed, fixed.batch(0, 1).inputs[0].numpy())
    assert segs[3] == segs[0] and len({segs[0], segs[1], segs[2]}) == 3
    assert segs[4:] == segs[:4]  # the schedule repeats
    alternating = make("kv_stream", params={"return_prob": 1.0}, seq_len=256)
    segs = segment_keys(alternating, alternating.batch(0, 1).inputs[0].numpy())
    assert segs[0::2] == [segs[0]] * 4 and segs[1::2] == [segs[1]] * 4 and segs[0] != segs[1]
    fresh = make("kv_stream", params={"return_prob": 0.0, "num_mappings": 4,
                                      "pairs_per_mapping": 4, "segment_len": 16}, seq_len=128)
    sched = fresh.schedules(np.random.default_rng(0), 50, 8)
    assert (sched[:, :4] == np.arange(4)).all()  # new mappings while any is left
    assert (sched[:, 4:] != sched[:, 3:-1]).all() and (sched[:, 4:] < 4).all()
    mixed = make("kv_stream").schedules(np.random.default_rng(1), 200, 8)
    returns = [[m[s] in m[:s] for s in range(2, 8)] for m in mixed.tolist()]
    assert 0.42 < np.mean(returns) < 0.58  # return_prob 0.5
    assert (mixed[:, 1:] != mixed[:, :-1]).all() and (mixed[:, 1] == 1).all()


def test_kv_stream_evaluate_rows_with_oracles():
    task = make("kv_stream")  # 5 segments of 32: mappings 0-3, then one of 0-2 comes back
    perfect = task.evaluate(LookupOracle(task.n_outputs), "cpu")
    assert [r.task for r in perfect] == ["mapping 0", "mapping 1", "mapping 2", "return"]
    assert all(r.metric == 1.0 for r in perfect)
    # Mapping 2 comes back after one other segment: its keys were last seen 34-62 tokens
    # earlier, mapping 1's 66-94, mapping 0's 98-126.
    for horizon, kept in ((64, {"mapping 2"}), (96, {"mapping 1", "mapping 2"})):
        oracle = LookupOracle(task.n_outputs, horizon=horizon)
        rows = {r.task: r.metric for r in task.evaluate(oracle, "cpu") if r.task != "return"}
        assert {k for k, v in rows.items() if v == 1.0} == kept
        assert all(v < 0.25 for k, v in rows.items() if k not in kept)
    const = task.evaluate(ConstantModel(task.n_outputs, task.params.num_keys), "cpu")
    assert all(r.metric < 0.25 for r in const)
    b = task.batch(0, 4)
    logits, _ = LookupOracle(task.n_outputs)(b.inputs)
    assert task.metric(logits, b.score_targets) == 1.0
    assert task.metric(logits, b.targets) < 1.0  # first sights cannot be known


def test_kv_stream_without_returns_has_no_return_row():
    task = make("kv_stream", params={"schedule": "ABCDE"})
    assert [r.task for r in task.evaluate(LookupOracle(task.n_outputs), "cpu")] == \
        ["mapping 0", "mapping 1", "mapping 2"]


def test_kv_stream_delay_grid_is_clipped():
    assert make("kv_stream", seq_len=256).delays() == [4, 8, 16, 32, 64, 128]
    short_segments = {"pairs_per_mapping": 4, "segment_len": 16}
    assert make("kv_stream", params=short_segments, seq_len=64).delays() == [4, 8, 16, 32]
    few_keys = {"num_keys": 16, "num_mappings": 2}
    assert make("kv_stream", params=few_keys, seq_len=256).delays() == [4, 8, 16, 32]


@pytest.mark.parametrize("delay", [4, 16, 64, 128])
def test_kv_stream_delay_streams_ask_each_fact_once_exactly_delay_tokens_later(delay):
    task = make("kv_stream", seq_len=256)
    x, y, s = task.delay_streams(np.random.default_rng(0), delay, 2)
    for row, tgt, score in zip(x, y, s):
        asked = np.flatnonzero(score != IGNORE)
        assert len(asked) >= 32
        for t in asked:
            shown = np.flatnonzero(row[:t] == row[t])
            assert len(shown) == 1 and t - shown[0] == delay and row[shown[0] + 1] == tgt[t]
            assert (row[t + 1:] != row[t]).all()  # never asked again


@pytest.mark.parametrize("horizon", [4, 31, 32, 100])
def test_recall_by_delay_matches_an_oracle_memory_horizon(horizon):
    task = make("kv_stream", seq_len=256)
    oracle = LookupOracle(task.n_outputs, horizon=horizon, fallback=task.params.num_keys)
    recall = task.recall_by_delay(oracle, "cpu", silence=("fast",))
    assert sorted(recall) == [4, 8, 16, 32, 64, 128]
    for d, r in recall.items():
        if d <= horizon:
            assert r == 1.0, (d, r)
        else:
            assert r < 0.25, (d, r)
    assert oracle.silences and all(s == ("fast",) for s in oracle.silences)


@pytest.mark.parametrize("bad, field", [({"segment_len": 33}, "segment_len"),
                                        ({"segment_len": 8}, "segment_len"),
                                        ({"num_mappings": 20}, "num_mappings"),
                                        ({"num_mappings": 1}, "num_mappings"),
                                        ({"return_prob": 1.5}, "return_prob"),
                                        ({"schedule": "BA"}, "schedule"),
                                        ({"schedule": "ABZ"}, "schedule"),
                                        ({"schedule": "ab"}, "schedule"),
                                        ({"value_vocab": 1}, "value_vocab")])
def test_kv_stream_bad_settings_name_their_field(bad, field):
    with pytest.raises(ValidationError) as err:
        make("kv_stream", params=bad)
    assert loc_of(err.value) == (field,)


def test_kv_stream_needs_three_segments():
    make("kv_stream", seq_len=96)
    with pytest.raises(TaskConfigError) as err:
        make("kv_stream", seq_len=95)
    assert err.value.field == "segment_len"


# ---- charlm ---------------------------------------------------------------------------------

def test_charlm_default_corpora_load():
    assert 8 <= len(STDLIB_SOURCES) <= 12
    sources = stdlib_sources()
    assert len(sources) == len(STDLIB_SOURCES)  # all present in this Python
    assert all(b"def " in doc for doc in sources)
    prose = b"".join(stdlib_prose())
    assert len(prose) > 100_000 and prose.count(b" the ") > 1000


def test_charlm_split_holds_out_the_last_tenth_of_every_document():
    corpus = split_documents("x", [b"0123456789", b"abcdefghijklmnopqrst"])
    assert corpus.train.tobytes() == b"012345678abcdefghijklmnopqr"
    assert corpus.held_out.tobytes() == b"9st"


def test_charlm_bpc_hand_made_cases():
    task = make("charlm")
    targets = torch.randint(0, 256, (2, 5))
    assert abs(task.metric(torch.zeros(2, 5, 256), targets) - 8.0) < 1e-9
    half = torch.full((2, 5, 256), -1e4)
    half.scatter_(-1, targets.unsqueeze(-1), 0.0)
    half.scatter_(-1, ((targets + 1) % 256).unsqueeze(-1), 0.0)
    assert abs(task.metric(half, targets) - 1.0) < 1e-9


def test_charlm_batches_are_windows_of_the_current_corpus():
    task = make("charlm")  # continual, 10 steps: corpus A for steps 0-4, then B
    assert [task.phase(s) for s in range(10)] == ["corpus A"] * 5 + ["corpus B"] * 5
    for step, corpus in ((0, task.corpora[0]), (7, task.corpora[1])):
        b = task.batch(step, 3)
        assert torch.equal(b.inputs[:, 1:], b.targets[:, :-1])
        text = corpus.train.tobytes()
        for x, y in zip(b.inputs.tolist(), b.targets.tolist()):
            assert bytes(x + y[-1:]) in text


def test_charlm_evaluates_the_corpora_seen_so_far():
    def uniform(x, state=None, targets=None, silence=()):
        return torch.zeros(*x.shape, 256), state

    assert [(r.task, r.metric) for r in make("charlm").evaluate(uniform, "cpu")] == \
        [("corpus A", 8.0), ("corpus B", 8.0)]  # nothing trained yet: the whole run
    task = make("charlm")
    task.batch(3, 1)
    assert [r.task for r in task.evaluate(uniform, "cpu")] == ["corpus A"]
    assert [r.task for r in task.evaluate(uniform, "cpu", step=5)] == ["corpus A", "corpus B"]
    plain = make("charlm", params={"continual": False}, total_steps=None)
    assert plain.phase(99) == "corpus A"
    assert [r.task for r in plain.evaluate(uniform, "cpu")] == ["corpus A"]
    with pytest.raises(ValueError, match="total_steps"):
        make("charlm", total_steps=None).batch(0, 1)


def test_charlm_text_file_is_relative_to_the_project_folder(tmp_path):
    text = "Ünïcode works: bytes, not characters. " * 40
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "notes.txt").write_text(text, encoding="utf-8")
    task = make("charlm", params={"text_file": "data/notes.txt", "continual": False},
                base_dir=tmp_path)
    b = task.batch(0, 2)
    assert bytes(b.inputs[0].tolist()) in text.encode("utf-8")
    for bad in ("/etc/passwd", "C:\\data\\notes.txt", "~/notes.txt"):
        with pytest.raises(ValidationError) as err:
            make("charlm", params={"text_file": bad}, base_dir=tmp_path)
        assert loc_of(err.value) == ("text_file",)
    with pytest.raises(TaskConfigError) as missing:
        make("charlm", params={"text_file": "nope.txt"}, base_dir=tmp_path)
    assert missing.value.field == "text_file" and "nope.txt" in str(missing.value)
    (tmp_path / "tiny.txt").write_text("too short")
    with pytest.raises(TaskConfigError, match="seq_len"):
        make("charlm", params={"text_file": "tiny.txt"}, base_dir=tmp_path)


# ---- digits_stream --------------------------------------------------------------------------

class DigitsOracle:
    """Knows every image's label (a lookup table of the data set)."""

    def __init__(self):
        pixels, labels = digits()
        self.table = {p.tobytes(): int(y) for p, y in zip(pixels, labels)}

    def __call__(self, inputs, state=None, targets=None, silence=()):
        x = inputs[..., :64].numpy()
        pred = np.array([[self.table[img.tobytes()] for img in row] for row in x])
        return one_hot_logits(pred, 10), state


def test_digits_split_is_fixed_by_seed_and_disjoint():
    a, again, other = make("digits_stream"), make("digits_stream"), make("digits_stream", seed=3)
    train, held = np.concatenate(a.train_index), np.concatenate(a.held_index)
    assert len(np.intersect1d(train, held)) == 0 and len(train) + len(held) == 1797
    assert abs(len(held) / 1797 - 0.2) < 0.01
    assert all(np.array_equal(x, y) for x, y in zip(a.held_index, again.held_index))
    assert not np.array_equal(a.held_index[0], other.held_index[0])


def test_digits_stream_features_labels_and_pairs():
    task = make("digits_stream")  # 50 steps: 10 per pair
    assert [task.phase(s) for s in (0, 9, 10, 25, 49)] == \
        ["pair 0/1", "pair 0/1", "pair 2/3", "pair 4/5", "pair 8/9"]
    oracle = DigitsOracle()
    train_images = {digits()[0][i].tobytes() for i in np.concatenate(task.train_index)}
    for step, pair in ((0, {0, 1}), (25, {4, 5}), (49, {8, 9})):
        b = task.batch(step, 4)
        x, y = b.inputs.numpy(), b.targets.numpy()
        assert set(np.unique(y)) <= pair and 0.0 <= x[..., :64].min() and x[..., :64].max() <= 1.0
        assert (x[:, 0, 64:] == 0).all()
        feedback = x[:, 1:, 64:]
        assert np.array_equal(feedback.argmax(-1), y[:, :-1]) and (feedback.sum(-1) == 1).all()
        assert all(img.tobytes() in train_images for img in x[..., :64].reshape(-1, 64))
        assert task.metric(oracle(b.inputs)[0], b.targets) == 1.0
    blind = make("digits_stream", params={"label_feedback": False}).batch(0, 2)
    assert (blind.inputs[..., 64:] == 0).all()


def test_digits_evaluates_every_pair_seen_so_far():
    task = make("digits_stream")
    names = ["pair 0/1", "pair 2/3", "pair 4/5", "pair 6/7", "pair 8/9"]
    assert [(r.task, r.metric) for r in task.evaluate(DigitsOracle(), "cpu")] == \
        [(n, 1.0) for n in names]
    task.batch(21, 2)  # phase 2 began at step 20
    rows = task.evaluate(ConstantModel(10, 4), "cpu")
    assert [r.task for r in rows] == names[:3]
    assert rows[0].metric == 0.0 and rows[1].metric == 0.0 and abs(rows[2].metric - 0.5) < 0.1
    assert [r.task for r in task.evaluate(DigitsOracle(), "cpu", step=49)] == names


def test_digits_other_group_sizes_and_bad_settings():
    joint = make("digits_stream", params={"classes_per_phase": 10}, total_steps=None)
    assert joint.phase(123) == "classes 0-9"
    assert set(joint.batch(0, 2).targets.unique().tolist()) > {0, 9}
    assert make("digits_stream", params={"classes_per_phase": 1}).phase(0) == "class 0"
    for bad, field in (({"classes_per_phase": 3}, "classes_per_phase"),
                       ({"holdout": 0.9}, "holdout"), ({"holdout": 0.0}, "holdout")):
        with pytest.raises(ValidationError) as err:
            make("digits_stream", params=bad)
        assert loc_of(err.value) == (field,)
    with pytest.raises(ValueError, match="total_steps"):
        make("digits_stream", total_steps=None).batch(0, 1)


def test_eval_scores_only_first_showings_in_digit_streams():
    task = make("digits_stream", seq_len=200)
    index, scored = task.eval_streams(0)
    for row, mask in zip(index, scored):
        assert len(set(row[mask].tolist())) == mask.sum() == len(task.held_index[0])
        assert set(row.tolist()) == set(task.held_index[0].tolist())
    assert math.isclose(float(scored.mean()), len(task.held_index[0]) / 200)
