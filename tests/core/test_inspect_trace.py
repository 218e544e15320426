"""The memory inspector's data path (Qt-free): a trace position by position equals one forward,
records writes where the levels write, measures read-out movement where (and only where) the
memory changes, and can be cancelled."""
import math

import numpy as np
import pytest
import torch

from nlstudio.build import build_model, build_task
from nlstudio.inspect_trace import (IGNORE, TraceCancelled, TraceInput, compute_trace, example_sequence,
                                    text_sequence, token_labels)
from nlstudio.project import load_preset, parse_project, preset_paths

SEQ_LEN = 32
RTOL = 1e-5  # as tests/models/test_streaming.py: relative to the norm of the whole


def assert_close(a, b) -> None:
    a, b = torch.as_tensor(a).double(), torch.as_tensor(b).double()
    assert a.shape == b.shape
    err = float((a - b).norm())
    assert err <= RTOL * float(b.norm()) + 1e-7, err


def tiny_doc(task: dict, levels=None) -> dict:
    levels = levels or [
        {"id": "att", "kind": "attention", "period": None, "window": 8},
        {"id": "cms", "kind": "mlp", "period": 4, "objective": "task",
         "optimizer": {"name": "sgd", "eta": 0.05}},
        {"id": "slow", "kind": "mlp", "period": 8, "objective": "l2",
         "optimizer": {"name": "sgd", "eta": 0.05}},
        {"id": "ffn", "kind": "mlp", "period": None},
    ]
    ids = [lv["id"] for lv in levels]
    edges = [["input", ids[0]], *[[a, b] for a, b in zip(ids, ids[1:])], [ids[-1], "output"]]
    return {"format": "nlstudio.project", "version": 1, "name": "tiny",
            "model": {"d_model": 16, "heads": 2, "levels": levels, "edges": edges},
            "task": task,
            "train": {"steps": 4, "batch_size": 2, "seq_len": SEQ_LEN, "seed": 0,
                      "device": "cpu"}}


KV = {"name": "kv_stream", "num_keys": 16, "pairs_per_mapping": 2, "num_mappings": 4,
      "segment_len": 8, "value_vocab": 4}


def setup(task: dict, seed: int = 0):
    torch.manual_seed(seed)
    project = parse_project(tiny_doc(task))
    task_obj = build_task(project)
    return project, task_obj, build_model(project, task_obj)


@pytest.mark.parametrize("task", [{"name": "charlm"}, KV, {"name": "digits_stream"}])
def test_trace_logits_equal_one_full_forward(task):
    project, task_obj, model = setup(task)
    seq = example_sequence(project, length=48, index=1)
    trace = compute_trace(model, seq, labels=token_labels(task_obj))
    inputs = seq.inputs[None]
    with torch.no_grad():
        full, _ = model(inputs, None, targets=seq.targets[None])
    assert trace.logits.shape == (48, model.n_outputs) and trace.logits.dtype == np.float32
    assert_close(trace.logits, full[0])
    # loss and top-k are those of the logits
    y = seq.targets
    has = (y != IGNORE).numpy()
    ce = torch.nn.functional.cross_entropy(full[0][y != IGNORE], y[y != IGNORE],
                                           reduction="none")
    assert np.allclose(trace.loss[has], ce.numpy(), atol=1e-4)
    assert np.isnan(trace.loss[~has]).all()
    probs = torch.softmax(full[0], -1)
    assert (trace.top_ids[:, 0] == probs.argmax(-1).numpy()).all()
    assert np.allclose(trace.top_probs[:, 0], probs.max(-1).values.numpy(), atol=1e-5)


def test_text_trace_equals_the_models_own_stream():
    """Text is read as the model streams it with targets=None (next byte = target): the trace's
    logits equal one targets=None call over the text."""
    project, task, model = setup({"name": "charlm"})
    seq = text_sequence(task, "def f(x):\n    return x * 2\n" * 3)
    assert seq.targets[-1] == IGNORE and (seq.targets[:-1] == seq.inputs[1:]).all()
    trace = compute_trace(model, seq)
    with torch.no_grad():
        full, _ = model(seq.inputs[None])
    assert_close(trace.logits, full[0])


def test_write_positions_match_the_periods():
    project, task, model = setup({"name": "charlm"})
    seq = example_sequence(project, length=40, index=0)
    trace = compute_trace(model, seq)
    for lid, period in (("cms", 4), ("slow", 8)):
        lv = trace.levels[lid]
        assert lv.write_positions.tolist() == list(range(period - 1, 40, period)), lid
        assert (lv.write_norm[lv.wrote] > 0).all() and (lv.write_norm[~lv.wrote] == 0).all()
        assert all(lv.write_at(t) is not None for t in lv.write_positions)
        assert lv.write_at(0) is None
        # the memory changes at the writes, and only there: one stored matrix per write + 1
        assert len(lv.memories) == len(lv.write_positions) + 1
        for t in range(1, 40):
            changed = not np.array_equal(lv.memory_at(t), lv.memory_at(t - 1))
            assert changed == bool(lv.wrote[t]), (lid, t)
    assert not trace.levels["ffn"].wrote.any()
    # attention re-reads its context: every token enters it, no read-out to measure
    assert trace.levels["att"].wrote.all() and trace.levels["att"].readout_move is None


def test_readout_moves_where_a_level_writes_and_nowhere_else():
    project, task, model = setup({"name": "charlm"})
    seq = example_sequence(project, length=40, index=2)
    trace = compute_trace(model, seq)
    for lid in ("cms", "slow"):
        lv = trace.levels[lid]
        assert (lv.readout_move[lv.wrote] > 0).all(), lid
        assert (lv.readout_move[~lv.wrote] == 0).all(), lid
    frozen_ffn = trace.levels["ffn"]
    assert frozen_ffn.readout_move is not None and (frozen_ffn.readout_move == 0).all()


def test_a_frozen_level_neither_writes_nor_moves_and_the_others_are_unchanged():
    project, task, model = setup({"name": "charlm"})
    seq = example_sequence(project, length=24, index=0)
    trace = compute_trace(model, seq, freeze=("slow",))
    slow = trace.levels["slow"]
    assert not slow.wrote.any() and (slow.readout_move == 0).all()
    assert len(slow.memories) == 1
    assert trace.levels["cms"].wrote.any()  # a frozen neighbour does not stop the others


def test_a_model_that_predicts_nothing_shows_uniform_probabilities_and_log_v_loss():
    project, task, model = setup({"name": "charlm"})
    with torch.no_grad():
        model.final_norm.weight.zero_()  # every logit 0
    seq = text_sequence(task, "abcabc")
    trace = compute_trace(model, seq)
    assert np.allclose(trace.top_probs, 1 / 256, atol=1e-7)
    assert np.allclose(trace.loss[:-1], math.log(256), atol=1e-5)


def test_cancel_stops_and_progress_counts_every_position():
    project, task, model = setup({"name": "charlm"})
    seq = example_sequence(project, length=20, index=0)
    seen = []
    compute_trace(model, seq, progress=lambda done, total: seen.append((done, total)))
    assert seen == [(i, 20) for i in range(1, 21)]
    calls = []
    with pytest.raises(TraceCancelled):
        compute_trace(model, seq, progress=lambda d, t: calls.append(d),
                      cancel=lambda: len(calls) >= 5)
    assert calls == [1, 2, 3, 4, 5]


@pytest.mark.parametrize("task", [KV, {"name": "mqar", "num_pairs": 4, "key_vocab": 8},
                                  {"name": "needle"}, {"name": "digits_stream"},
                                  {"name": "charlm"}])
def test_examples_come_from_the_tasks_own_generator(task):
    project, task_obj, _ = setup(task)
    a, b = example_sequence(project, 64, 0), example_sequence(project, 64, 0)
    c = example_sequence(project, 64, 1)
    assert len(a) == 64 and a.targets.shape == (64,)
    assert torch.equal(a.inputs, b.inputs) and not torch.equal(a.inputs, c.inputs)
    assert (a.targets != IGNORE).any()
    # not a training batch: those are drawn for rank 0
    train = task_obj.batch(0, 1)
    assert not torch.equal(train.inputs[0, :32], a.inputs[:32])


def test_csv_table_has_a_row_per_position_and_names_tokens():
    project, task, model = setup(KV)
    trace = compute_trace(model, example_sequence(project, 32, 0), labels=token_labels(task))
    header, rows = trace.csv_table()
    assert len(rows) == 32 and all(len(r) == len(header) for r in rows)
    assert header[:4] == ["position", "input", "target", "loss"]
    assert rows[0][1].startswith("k") and rows[1][1].startswith("v")  # kv_stream's own labels
    assert "cms.readout_move" in header and "att.readout_move" in header
    assert rows[0][header.index("att.readout_move")] is None


def test_text_sequence_refuses_what_is_not_text():
    _, kv, _ = setup(KV)
    with pytest.raises(ValueError, match="not bytes"):
        text_sequence(kv, "abc")
    _, charlm, _ = setup({"name": "charlm"})
    with pytest.raises(ValueError, match="empty"):
        text_sequence(charlm, "")


@pytest.mark.parametrize("window", [None, 8])
def test_attention_map_at_a_position_is_the_one_the_memory_dock_shows(window):
    """Attention's probe is one row per query; the trace assembles the rows recorded at each
    position into the map the Memory dock shows after a call that ends there."""
    levels = [{"id": "att", "kind": "attention", "period": None, "window": window},
              {"id": "ffn", "kind": "mlp", "period": None}]
    torch.manual_seed(0)
    project = parse_project(tiny_doc({"name": "charlm"}, levels))
    model = build_model(project)
    seq = example_sequence(project, length=80, index=0)
    trace = compute_trace(model, seq)
    lv = trace.levels["att"]
    for t in (5, 63, 79):
        with torch.no_grad():
            _, state = model(seq.inputs[None, :t + 1], None, targets=seq.targets[None, :t + 1])
        dock = model.probe(state)["att"].memory.numpy()
        shown = lv.memory_at(t)
        w = shown.shape[0]
        assert shown.shape == (w, w) and w == min(t + 1, 64 if window is None else window)
        assert np.allclose(shown, dock[-w:, -w:], atol=1e-6), t


@pytest.mark.parametrize("preset", sorted(preset_paths()))
def test_every_preset_traces_exactly_and_reads_move_only_at_writes(preset):
    """Every bundled preset (every level kind): the trace equals one forward, and a level's
    read-out on the fixed probes moves at its writes and nowhere else."""
    project = load_preset(preset)
    task = build_task(project)
    torch.manual_seed(0)
    model = build_model(project, task)
    whole = example_sequence(project, index=0)  # a task may need its seq_len to draw one
    seq = TraceInput(whole.inputs[:40], whole.targets[:40], whole.source)
    trace = compute_trace(model, seq)
    with torch.no_grad():
        inputs = seq.inputs[None]
        full, _ = model(inputs, None, targets=seq.targets[None])
    assert_close(trace.logits, full[0])
    for lid, lv in trace.levels.items():
        if lv.readout_move is None:
            assert not lv.parametric, lid
            continue
        assert (lv.readout_move[~lv.wrote] == 0).all(), lid
        assert (lv.readout_move[lv.wrote] > 0).all(), lid
