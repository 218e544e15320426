"""The two per-level ablations of the recall-by-delay probe and their nulls: freeze (writes
stopped, output kept: what a level stores) and silence (output zeroed: what the model depends
on). A hand-built model whose only path from the past is one level's memory shows that level's
whole recall as its freeze drop; a level whose writes do nothing, and every level of an
untrained model, show none; the trainer writes both to delay.csv and publishes the content
rates; ``nlstudio eval`` prints both tables with their meaning."""
import numpy as np
import pytest
import torch

from nlstudio import probes
from nlstudio.models import build_model
from nlstudio.tasks import get_task

D = 64


@pytest.fixture(scope="module")
def task():
    return get_task("kv_stream")({"num_keys": 32, "value_vocab": 16, "pairs_per_mapping": 4,
                                  "segment_len": 16}, seq_len=128, seed=0)


def recall_model(task):
    """Embedding → ``idle`` (linear attention with η = 0: its writes change nothing) →
    ``mem`` (linear attention, set by hand to store every key → value pair: its short
    convolution keys each value by the token before it, a key reads its value back) →
    ``ffn`` (an MLP frozen by design, its output zero) → the tied head. No other level sees
    the past, so every fact recalled was stored by ``mem``'s writes."""
    torch.manual_seed(0)
    spec = {"d_model": D, "heads": 1, "levels": [
        {"id": "idle", "kind": "linear_attention", "period": 1,
         "optimizer": {"name": "sgd", "eta": 0.0}},
        {"id": "mem", "kind": "linear_attention", "period": 1, "conv": 2},
        {"id": "ffn", "kind": "mlp", "period": None}],
        "edges": [["input", "idle"], ["idle", "mem"], ["mem", "ffn"], ["ffn", "output"]]}
    model = build_model(spec, vocab_size=task.vocab_size)
    with torch.no_grad():
        basis, _ = torch.linalg.qr(torch.randn(D, task.vocab_size, dtype=torch.float64))
        model.embed.weight.copy_(basis.T.float())  # orthonormal token embeddings
        mem, eye = model.levels["mem"], torch.eye(D)
        for proj in (mem.q_proj, mem.k_proj, mem.v_proj):
            proj.weight.copy_(eye)
        mem.out_proj.weight.copy_(10 * eye)  # the recalled value outweighs the key itself
        taps = torch.zeros_like(mem.conv.weight)
        taps[:D, 0, -1] = 1.0  # q: this token
        taps[D:2 * D, 0, -2] = 1.0  # k: the token before (the key of a value)
        taps[2 * D:, 0, -1] = 1.0  # v: this token
        mem.conv.weight.copy_(taps)
        model.levels["ffn"].w2.zero_()
    return model.eval()


def test_a_level_that_provably_holds_the_facts_shows_its_freeze_drop(task):
    model = recall_model(task)
    delays, tables = probes.recall_by_delay_ablations(task, model, "cpu", model.order)
    assert set(tables) == {"freeze", "silence"} and len(delays) >= 4
    for kind in ("freeze", "silence"):
        names, _, table = probes.delay_table(
            [(1, lid or "none", d, v, kind if lid else "none")
             for lid, values in tables[kind].items() for d, v in zip(delays, values)],
            ablation=kind)
        levels, drop = probes.ablation_drop(names, table)
        drop = dict(zip(levels, drop))
        np.testing.assert_allclose(table[0], 1.0)  # the full model recalls every fact
        np.testing.assert_allclose(drop["mem"], 1.0)  # all of it is mem's memory
        np.testing.assert_allclose(drop["idle"], 0.0)  # writes that change nothing: null
        np.testing.assert_allclose(drop["ffn"], 0.0)  # frozen by design: null


def test_an_untrained_model_shows_no_stored_memory(task):
    torch.manual_seed(0)
    spec = {"d_model": 32, "heads": 2, "levels": [
        {"id": "attn", "kind": "attention", "period": None},
        {"id": "delta", "kind": "delta", "period": 1},
        {"id": "cms", "kind": "mlp", "period": 8},
        {"id": "fast", "kind": "self_modifying", "period": 4}],
        "edges": [["input", "attn"], ["attn", "delta"], ["delta", "cms"], ["cms", "fast"],
                  ["fast", "output"]]}
    model = build_model(spec, vocab_size=task.vocab_size).eval()
    delays, tables = probes.recall_by_delay_ablations(task, model, "cpu", model.order)
    freeze = tables["freeze"]
    assert "attn" not in freeze and set(freeze) == {"", "delta", "cms", "fast"}
    assert "attn" in tables["silence"]  # silence covers every level
    full = np.array(freeze[""])
    chance = 1 / task.params.value_vocab
    assert full.max() <= 2.5 * chance  # nothing is recalled...
    for lid in ("delta", "cms", "fast"):  # ...so freezing a level cannot cost anything real
        assert np.all(np.abs(full - np.array(freeze[lid])) <= 2.5 * chance), lid


def test_the_old_silence_only_helper_keeps_its_answer(task):
    model = recall_model(task)
    delays, recall = probes.recall_by_delay_with_ablation(task, model, "cpu", ["mem"])
    assert set(recall) == {"", "mem"} and recall["mem"] == (0.0,) * len(delays)
    with pytest.raises(ValueError, match="unknown ablation"):
        probes.recall_by_delay_ablations(task, model, "cpu", ["mem"], ("mute",))


def test_older_delay_rows_hold_silence_only():
    from nlstudio.runs import DelayRow

    old = [(5, "none", 8, 1.0), (5, "fast", 8, 0.2)]
    assert probes.ablations_measured(old) == {"silence"}
    new = [DelayRow(5, "none", 8, 1.0, "none"), DelayRow(5, "fast", 8, 0.2, "silence"),
           DelayRow(5, "fast", 8, 0.9, "freeze")]
    assert probes.ablations_measured(new) == {"silence", "freeze"}


def test_the_trainer_writes_both_ablations_and_publishes_the_content_rates(tmp_path,
                                                                           tiny_project):
    from nlstudio import events as ev
    from nlstudio.runs import load_run
    from nlstudio.trainer import Trainer

    doc = tiny_project(steps=4, seq_len=64)
    doc["task"] = {"name": "kv_stream", "num_keys": 32, "value_vocab": 16,
                   "pairs_per_mapping": 4, "segment_len": 16}
    evaluations = []
    trainer = Trainer(doc, out=tmp_path / "run", snapshots=False,
                      on_event=lambda e: isinstance(e, ev.Evaluation) and evaluations.append(e))
    assert trainer.run().reason == "completed"
    event = evaluations[-1]
    assert event.delays and set(event.recall) == {"", "fast", "slow"}
    assert set(event.frozen) == {"", "fast", "slow"}  # both mlp levels are parametric
    assert event.frozen["slow"] == event.frozen[""]  # frozen by design: freezing is a no-op
    assert list(event.content) == ["fast", "slow"]
    assert event.content["slow"].frequency == 0.0  # never written: never changes
    assert event.content["fast"].writes_per_token == pytest.approx(1 / 4)
    assert event.content["fast"].tokens == 64
    rows = load_run(tmp_path / "run").delay_rows
    kinds = {r.ablation for r in rows if r.step == event.step}
    assert kinds == {"none", "silence", "freeze"}
