"""The lessons' computations (Qt-free), on the real code path: one registry and one protocol for
every core, lesson 2's proximal step is the SGD step, lesson 4's levels are GD steps to float64
precision, lesson 3's optimizers take distinct paths and keep memories of the expected shapes,
lesson 1 measures each level's content rate beside its design, and lesson 5 trains the real NSAM
kv_stream model through the trainer, measures per-level recall by delay on the weights it saved
and says a level's writes hold a fact only where freezing them (not silencing the level) costs
recall beyond noise."""
from __future__ import annotations

import dataclasses
import math
import time

import numpy as np
import pytest
import torch

from nlstudio.lessons import LESSONS, LessonCore, lesson_by_key, lesson_core, lesson_info
from nlstudio.lessons import associative, attention_gd, memory_loop, optimizers, spectrum
from nlstudio.runs import load_run
from nlstudio.tasks import kv_stream
from nlstudio.tasks.base import IGNORE


def test_lesson_cores_need_no_qt(tmp_path):
    import subprocess
    import sys
    import textwrap

    code = textwrap.dedent("""
        import sys
        class BlockQt:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in ("PySide6", "shiboken6", "pyqtgraph"):
                    raise ImportError(name)
        sys.meta_path.insert(0, BlockQt())
        from nlstudio.lessons import associative, attention_gd, memory_loop, optimizers, spectrum
        print(associative.AssociativeMemoryLesson().next().proximal_gap < 1e-12)
        """)
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "True"


def test_registry_lists_five_lessons():
    assert [info.number for info in LESSONS] == [1, 2, 3, 4, 5]
    assert lesson_info(4).key == "attention_gd"
    assert lesson_by_key("memory_loop").number == 5
    with pytest.raises(KeyError):
        lesson_info(6)
    # one name per class: a core is a *Lesson, its view the matching *View
    assert len({info.core for info in LESSONS}) == len(LESSONS)
    for info in LESSONS:
        assert info.core.endswith("Lesson") and info.view == info.core[:-6] + "View"
        assert lesson_core(info.number).__module__ == f"nlstudio.lessons.{info.key}"


@pytest.mark.parametrize("number", [2, 3, 4])
def test_instant_cores_step_back_and_reset_by_the_protocol(number):
    """The same five members step every core: Next changes what it shows, Back undoes it,
    Reset returns to the start."""
    lesson = lesson_core(number)()
    assert isinstance(lesson, LessonCore)
    assert lesson.step_count == 0 and not lesson.done
    lesson.next()
    lesson.next()
    assert lesson.step_count == 2
    lesson.back()
    assert lesson.step_count == 1
    lesson.reset()
    assert lesson.step_count == 0
    lesson.back()  # a no-op at the start
    assert lesson.step_count == 0


# ---- lesson 2 -----------------------------------------------------------------------------------
def test_proximal_solution_equals_the_sgd_step():
    lesson = associative.AssociativeMemoryLesson(dim=6, pairs=6, eta=0.5, seed=3)
    for _ in range(9):
        step = lesson.next()
        assert step.proximal_gap < 1e-12
        assert step.proximal_residual < 1e-10
        np.testing.assert_allclose(step.write, -0.5 * np.outer(step.surprise, step.x),
                                   atol=1e-14)
        np.testing.assert_allclose(step.after, step.before + step.write, atol=1e-14)
        # the surprise is the gradient of ½‖Wx − y*‖² with respect to the output
        np.testing.assert_allclose(step.surprise, step.prediction - step.target, atol=1e-14)
    losses = lesson.losses()
    assert losses.shape == (10,) and losses[-1] < losses[0]


def test_proximal_solver_on_a_random_problem():
    gen = torch.Generator().manual_seed(0)
    w = torch.randn(4, 5, generator=gen, dtype=torch.float64)
    x = torch.randn(5, generator=gen, dtype=torch.float64)
    u = torch.randn(4, generator=gen, dtype=torch.float64)
    solution, residual = associative.solve_proximal(w, x, u, eta=0.3)
    # checked against the closed form here, in the test only
    torch.testing.assert_close(solution, w - 0.3 * torch.outer(u, x), rtol=0, atol=1e-12)
    assert residual < 1e-10


def test_lesson_2_back_and_reset():
    lesson = associative.AssociativeMemoryLesson()
    first = lesson.next()
    lesson.next()
    lesson.back()
    assert lesson.step_count == 1 and lesson.current is first
    np.testing.assert_array_equal(lesson.memory(), first.after)
    lesson.reset()
    assert lesson.step_count == 0 and not lesson.memory().any()
    assert lesson.back() is None


# ---- lesson 4 -----------------------------------------------------------------------------------
@pytest.mark.parametrize("rule", ["linear_attention", "delta"])
def test_levels_are_one_gd_step_per_token(rule):
    lesson = attention_gd.GradientStepLesson(rule, tokens=20)
    assert lesson.level.q_proj.weight.dtype == torch.float64
    for _ in range(lesson.tokens):
        step = lesson.next()
        assert step.max_diff < 1e-13, step.max_diff
        assert step.read_diff < 1e-13, step.read_diff
    assert lesson.done and lesson.max_diffs().shape == (20,)
    assert np.abs(lesson.current.level_after).max() > 1e-3  # the memory did change
    if rule == "linear_attention":
        np.testing.assert_allclose(lesson.current.eta, lesson.eta)
    else:  # η_t = η σ(·): per head and token, below the level's η
        assert (lesson.current.eta > 0).all() and (lesson.current.eta < lesson.eta).all()
        assert lesson.current.objective_after < lesson.current.objective_before


def test_lesson_4_back_restores_the_levels_state():
    lesson = attention_gd.GradientStepLesson("delta", tokens=6)
    lesson.next()
    second = lesson.next()
    lesson.back()
    again = lesson.next()
    np.testing.assert_array_equal(again.level_after, second.level_after)
    lesson.reset()
    assert lesson.step_count == 0 and not lesson.state["M"].any()


# ---- lesson 3 -----------------------------------------------------------------------------------
def test_optimizers_take_distinct_paths_and_keep_their_memories():
    lesson = optimizers.OptimizerLesson()
    assert all(lesson.next() for _ in range(25))
    paths = lesson.landscape.paths()
    assert set(paths) == set(optimizers.NAMES)
    for path in paths.values():
        assert path.shape == (26, 2) and np.isfinite(path).all()
    names = list(paths)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            assert np.abs(paths[a] - paths[b]).max() > 1e-3, (a, b)
    start = lesson.landscape.landscape.psi(*lesson.landscape.landscape.start)
    assert all(v < start for v in lesson.landscape.values().values())

    setup = lesson.regression.setup
    shape = (setup.outputs, setup.dim)
    expected = {"sgd": {}, "momentum": {"m": shape}, "adam": {"m": shape, "v": shape},
                "delta_momentum": {"m": shape}, "m3": {"M1": shape, "M2": shape, "V": shape}}
    for name, keys in expected.items():
        assert {k: v.shape for k, v in lesson.memory(name).items()} == keys
    for name, keys in expected.items():  # the same shapes fed one shared gradient stream
        assert {k: v.shape for k, v in lesson.memory(name, "shared").items()} == keys
    # fed the very same gradients, momentum and delta momentum still remember differently
    assert np.abs(lesson.memory("momentum", "shared")["m"]
                  - lesson.memory("delta_momentum", "shared")["m"]).max() > 1e-6
    assert len(lesson.regression.stream) == 25
    dmgd = lesson.memory("dmgd")
    assert dmgd["b"].shape == shape and dmgd["w1"].shape == (1, 4)
    assert lesson.memory("momentum", "landscape")["m"].shape == (1, 2)
    assert np.abs(lesson.memory("adam")["v"]).max() > 0


def test_continual_regression_runs_and_steps_back():
    lesson = optimizers.OptimizerLesson()
    taken = sum(lesson.next() for _ in range(lesson.total_steps + 5))
    assert taken == lesson.total_steps
    assert lesson.done and lesson.step_count == lesson.total_steps
    losses = lesson.regression.first_task_loss()
    s = lesson.regression.setup
    for name, curve in losses.items():
        assert curve.shape == (s.total_steps + 1,) and np.isfinite(curve).all()
        assert curve[s.steps_per_task] < curve[0], name  # task 1 was learned
    forgot = lesson.regression.forgetting()
    assert set(forgot) == set(optimizers.NAMES)
    assert "least" in lesson.summary()
    before = lesson.landscape.paths()["adam"][-2].copy()
    lesson.back()
    assert lesson.step_count == lesson.total_steps - 1
    np.testing.assert_array_equal(lesson.landscape.paths()["adam"][-1], before)
    lesson.reset()
    assert lesson.step_count == 0


# ---- lesson 1 -----------------------------------------------------------------------------------
def test_lesson_1_measures_the_content_rate_beside_the_design():
    """The numbers come from ``probes.content_rates`` on the untrained preset model: the
    designed 1/C beside the measured content frequency, the write schedule apart."""
    m = spectrum.measure("nsam")
    periods = {lid: lv.period for lid, lv in m.levels.items()}
    cms = {lid: c for lid, c in periods.items() if c is not None}
    assert cms == {"fast": 8, "cms_mid": 16, "cms_slow": 64}
    for lid, c in cms.items():
        level = m.levels[lid]
        assert level.designed == pytest.approx(1.0 / c)
        assert level.writes_per_token == pytest.approx(1.0 / c)  # the schedule, apart
        rate = level.content
        assert rate.tokens == m.tokens == spectrum.SEQ_LEN and rate.sequences == spectrum.BATCH
        assert len(rate.lags) == m.tokens // 2 and float(rate.drift.max()) > 0  # it changes
        # untrained, no level replaces what it holds as fast as its schedule writes
        assert rate.frequency < 1.0 / c, lid
    frozen = m.levels["frozen"]
    assert frozen.designed == 0.0 and frozen.content.frequency == 0.0
    assert "never changed" in spectrum.describe_level(frozen)
    # the same measurement as a run's evaluation makes, on the same streams
    from nlstudio import probes
    from nlstudio.build import build_model, build_task
    from nlstudio.project import load_preset, project_to_dict

    doc = project_to_dict(load_preset("nsam"))
    doc["train"]["seq_len"] = spectrum.SEQ_LEN
    task = build_task(doc)
    torch.manual_seed(0)
    again = probes.content_rates(build_model(doc, task), task, sequences=spectrum.BATCH,
                                 max_tokens=spectrum.SEQ_LEN)
    np.testing.assert_allclose(again["cms_mid"].replaced, m.levels["cms_mid"].content.replaced)


def test_transformer_sits_at_the_two_extremes():
    m = spectrum.measure("transformer")
    kinds = {lv.kind for lv in m.levels.values()}
    assert kinds == {"attention", "mlp"}
    for lv in m.levels.values():
        if lv.kind == "attention":
            assert math.isinf(lv.designed) and lv.content.rereads
            assert len(lv.content.lags) == 0  # no made-up series
            assert "re-reads its context" in spectrum.describe_level(lv)
        else:
            assert lv.designed == 0.0 and lv.content.frequency == 0.0
    assert spectrum.frequency_text(1 / 16) == "1/16"


def test_lesson_1_core_steps_by_batches_and_drops_a_stale_measurement():
    lesson = spectrum.SpectrumLesson("nsam")
    assert isinstance(lesson, LessonCore) and lesson.step_count == 0 and lesson.current is None
    first = lesson.next()
    assert first.preset == "nsam" and first.batch_index == 0 and lesson.step_count == 1
    second = lesson.next()
    assert second.batch_index == 1 and lesson.current is second
    assert not np.array_equal(second.levels["cms_mid"].content.replaced,
                              first.levels["cms_mid"].content.replaced)  # other streams
    pooled = lesson.pooled()["cms_mid"]
    np.testing.assert_allclose(pooled.replaced, first.levels["cms_mid"].content.replaced
                               + second.levels["cms_mid"].content.replaced)
    lesson.back()
    assert lesson.current is first
    lesson.back()  # the first batch is the start: it stays
    assert lesson.measurements == [first]
    lesson.next()
    lesson.reset()
    assert lesson.measurements == [first]
    lesson.select("transformer")
    assert lesson.step_count == 0 and lesson.preset == "transformer"
    with pytest.raises(ValueError):
        lesson.select("nope")


def test_lesson_1_drops_a_measurement_of_a_preset_no_longer_shown(monkeypatch):
    """next() runs in a worker thread; if the user switched presets meanwhile, its result is
    dropped instead of being mixed into the new preset's batches."""
    lesson = spectrum.SpectrumLesson("nsam")
    real = spectrum.measure

    def measure_then_switch(preset, index, *args, **kwargs):
        result = real(preset, index, *args, **kwargs)
        lesson.select("transformer")  # the user picked the other preset while it ran
        return result

    monkeypatch.setattr(spectrum, "measure", measure_then_switch)
    assert lesson.next() is None
    assert lesson.preset == "transformer" and lesson.measurements == []


# ---- lesson 5 -----------------------------------------------------------------------------------
SMALL = memory_loop.LoopConfig(train_steps=1, return_rows=2, max_gap=2)


def test_memory_loop_trains_through_the_trainer_and_measures_its_weights():
    lesson = memory_loop.MemoryLoopLesson(SMALL)
    assert isinstance(lesson, LessonCore)
    assert lesson.step_count == 0 and lesson.done  # nothing to step through before a result
    job = memory_loop.LoopJob()
    result = lesson.run(1, job)
    assert job.phase == "done" and job.step == 1 and math.isfinite(job.loss)
    assert result.trained_steps == 1 and math.isfinite(result.loss)
    assert result.loss == pytest.approx(job.loss)  # the trainer's own loss, from its events
    # the trainer wrote a run folder; the lesson measured the weights it saved there
    run = load_run(lesson.run_dir)
    assert run.steps == 1 and run.checkpoint_step == 1
    assert run.project.train.batch_size == SMALL.batch_size
    model = lesson.trained_model()
    # attribution rows: the levels with writes, frozen in turn (the frozen MLP writes nothing)
    assert memory_loop.written_levels(model) == ["fast", "cms_mid", "cms_slow"]
    d = result.delay
    assert d.ablation == "freeze" and d.names == ["none", "fast", "cms_mid", "cms_slow"]
    assert result.written == ["fast", "cms_mid", "cms_slow"]
    assert list(d.delays) == lesson.task.delays()
    assert d.table.shape == (4, len(d.delays))
    assert ((d.table >= 0) & (d.table <= 1)).all()
    # the full model's row is the task's own recall_by_delay of the saved weights
    direct = lesson.task.recall_by_delay(model, "cpu")
    np.testing.assert_allclose(d.table[0], [direct[k] for k in d.delays])
    frozen = lesson.task.recall_by_delay(model, "cpu", freeze=("cms_mid",))
    np.testing.assert_allclose(d.table[d.names.index("cms_mid")],
                               [frozen[k] for k in d.delays])
    # each delay's recall is scored on exactly the questions the noise band counts
    for delay in d.delays:
        rows = math.ceil(kv_stream.EVAL_FACTS / lesson.task._facts_per_row(int(delay) // 2))
        _, _, scored = lesson.task.delay_streams(lesson.task.eval_rng(3, int(delay)),
                                                 int(delay), min(kv_stream.MAX_ROWS, rows))
        assert int((scored != IGNORE).sum()) == d.questions
    # silence, measured beside it over every level, is its own, so-named table
    s = result.silenced
    assert s.ablation == "silence" and s.names == ["none", *result.level_ids]
    np.testing.assert_allclose(s.table[0], d.table[0])
    silenced = lesson.task.recall_by_delay(model, "cpu", silence=("frozen",))
    np.testing.assert_allclose(s.table[s.names.index("frozen")],
                               [silenced[k] for k in d.delays])
    # ... and the untrained curve is the model before the trainer's first step
    untrained = lesson.task.recall_by_delay(lesson.untrained_model(), "cpu")
    np.testing.assert_allclose(result.untrained, [untrained[k] for k in d.delays])
    assert any(not torch.equal(a, b) for a, b in zip(model.parameters(),
                                                     lesson.untrained_model().parameters()))
    r = result.returns
    assert list(r.gaps) == [32, 64] and r.names == d.names  # rows: which level is frozen
    assert list(r.questions) == [SMALL.return_rows * lesson.task.params.pairs_per_mapping] * 2
    for table in (r.first_sight, r.held, r.relearned):
        assert table.shape == (4, 2) and np.isfinite(table).all()
    # the return's rows freeze the level's writes (not silence it)
    inputs, targets, gaps, codes = lesson.return_streams()
    logits = lesson.task.model_logits(model, torch.as_tensor(inputs), torch.as_tensor(targets),
                                      "cpu", freeze=("cms_slow",))
    right = logits.argmax(-1).numpy() == targets
    relearned = [right[(codes == 3) & (gaps == g)[:, None]].mean() for g in (1, 2)]
    np.testing.assert_allclose(r.relearned[r.names.index("cms_slow")], relearned)
    assert memory_loop.slowest_level(result) == "cms_slow"
    assert result.chance == pytest.approx(1 / 16)
    text = memory_loop.describe(result)
    assert "After 1 training steps" in text and "untrained:" in text and "%" in text
    # the story's stages: the showing, one per delay, the return
    assert lesson.step_count == 0 and not lesson.done
    for stage in range(1, result.stages):
        assert lesson.next() == stage
    assert lesson.done and lesson.next() == result.stages - 1
    lesson.back()
    assert lesson.step_count == result.stages - 2
    lesson.reset()
    assert lesson.step_count == 0
    folder = lesson.run_dir
    lesson.close()
    assert not folder.exists()


def test_memory_loop_stop_keeps_the_steps_taken_and_train_more_resumes_them():
    import threading

    lesson = memory_loop.MemoryLoopLesson(SMALL)
    job = memory_loop.LoopJob()
    job.stop()  # before anything ran: nothing is trained, nothing measured
    assert lesson.run(3, job) is None
    assert lesson.trained_steps == 0 and job.phase == "stopped" and lesson.run_dir is None

    job = memory_loop.LoopJob()
    out: list = []
    worker = threading.Thread(target=lambda: out.append(lesson.run(200, job)))
    worker.start()
    deadline = time.monotonic() + 120
    while job.step < 1 and worker.is_alive() and time.monotonic() < deadline:
        time.sleep(0.02)
    job.stop()  # Trainer.stop(): ends at the next step boundary
    worker.join(120)
    assert not worker.is_alive() and out == [None] and job.phase == "stopped"
    taken = lesson.trained_steps
    assert 1 <= taken < 200
    assert load_run(lesson.run_dir).checkpoint_step == taken

    result = lesson.run(1, memory_loop.LoopJob())  # "Train more": resumes the same run
    assert result.trained_steps == taken + 1
    assert load_run(lesson.run_dir).checkpoint_step == taken + 1
    lesson.close()


def _result(full, frozen, untrained=None, steps=30, chance=1 / 16, silenced=None,
            questions=10_000, periods=None):
    """A hand-made LoopResult: recall by delay of the full model, of each written level's
    writes frozen and (optionally) of each level silenced, on ``questions`` questions per
    delay (many: differences are beyond noise unless a test says otherwise)."""
    delays = np.array([4, 16, 64])
    written = list(frozen)
    ids = list(dict.fromkeys([*written, *(silenced or {})]))
    names = ["none", *written]
    grid = np.zeros((len(names), 2)) + 0.5
    silence = None if silenced is None else memory_loop.DelayResult(
        ["none", *silenced], delays, np.array([full, *silenced.values()], dtype=float),
        "silence", questions)
    return memory_loop.LoopResult(
        steps, 1.5, ids, periods or {lid: 16 * (i + 1) for i, lid in enumerate(written)},
        memory_loop.DelayResult(names, delays, np.array([full, *frozen.values()], dtype=float),
                                "freeze", questions),
        memory_loop.ReturnResult(np.array([32, 64]), names, grid, grid, grid,
                                 np.array([questions, questions])),
        None if untrained is None else np.asarray(untrained, float), chance=chance,
        silenced=silence)


def test_each_stage_says_what_is_true_there():
    result = _result([0.06, 0.6, 0.3], {"a": [0.06, 0.1, 0.28], "b": [0.06, 0.58, 0.05]},
                     untrained=[0.0, 0.2, 0.1])
    texts = [memory_loop.describe_stage(result, s) for s in range(result.stages)]
    assert len(set(texts)) == len(texts)  # a different text at every stage
    assert "just been shown" in texts[0] and "freezing one level's writes" in texts[0]
    assert "16 tokens after" in texts[2] and "60 %" in texts[2] and "untrained: 20 %" in texts[2]
    assert "Freezing a's writes costs the most here: recall falls to 10 %" in texts[2]
    assert "Freezing b's writes costs the most here: recall falls to 5 %" in texts[3]
    # at 4 tokens the model recalls at chance and freezing changes nothing: it says so
    assert "no better than guessing a value (6 %)" in texts[1]
    assert "no single level's writes hold" in texts[1]
    assert texts[-1] == memory_loop.describe(result)
    assert not any("ilenc" in t for t in texts)  # no silence table: no silence sentence


def test_a_model_whose_levels_do_nothing_has_no_holder_at_any_delay():
    flat = [0.3, 0.3, 0.3]
    result = _result(flat, {"a": flat, "b": [0.29, 0.31, 0.27]}, silenced={"a": flat, "b": flat})
    assert memory_loop.holder(result) is None
    for stage in range(1, len(result.delay.delays) + 1):
        text = memory_loop.describe_stage(result, stage)
        assert "no single level's writes hold" in text and "still hold" not in text
    assert "no single level's writes hold these facts" in memory_loop.describe(result)


def test_a_level_the_model_depends_on_is_not_said_to_hold_the_facts():
    """Issue 13 finding 2: silencing a level (its output zeroed) also removes what later
    levels compute from it. Here silencing "fast" costs up to 50 points and the frozen MLP
    ("mlp", no writes) 40, but freezing fast's writes costs nothing: the lesson must not say
    that either holds the facts (the attribution by silencing did)."""
    full = [0.06, 0.6, 0.5]
    result = _result(full, {"fast": full, "mid": [0.06, 0.58, 0.49]},
                     silenced={"fast": [0.06, 0.1, 0.2], "mid": full, "mlp": [0.06, 0.3, 0.1]},
                     periods={"fast": 8, "mid": 16, "mlp": None})
    assert result.written == ["fast", "mid"] and "mlp" in result.level_ids
    assert memory_loop.holder(result) is None
    texts = [memory_loop.describe_stage(result, s) for s in range(result.stages)]
    for text in texts:
        assert "fast's writes still hold" not in text and "fast's writes hold" not in text
        assert "mlp's writes" not in text and "so fast" not in text and "so mlp" not in text
    assert "Silencing fast (its output zeroed) costs 50 points here: the model depends on " \
        "its output, but freezing its writes does not clearly cost recall" in texts[2]
    assert "Silencing mlp (its output zeroed) costs 40 points here" in texts[3]
    assert "no single level's writes hold the fact at this delay" in texts[2]
    summary = texts[-1]
    assert "no single level's writes hold these facts" in summary
    assert "Silencing fast (its output zeroed) costs 50 points at some delay" in summary


def test_a_level_whose_frozen_writes_cost_recall_is_named_as_holding_the_facts():
    full = [0.06, 0.6, 0.5]
    result = _result(full, {"fast": [0.06, 0.59, 0.5], "mid": [0.06, 0.2, 0.3]},
                     silenced={"fast": [0.06, 0.1, 0.1], "mid": [0.06, 0.2, 0.3]})
    assert memory_loop.holder(result) == "mid"
    assert memory_loop.holder_at(result, 1) == ("mid", pytest.approx(0.4))
    text = memory_loop.describe_stage(result, 2)
    assert "Freezing mid's writes costs the most here: recall falls to 20 %, so mid's " \
        "writes still hold the fact at this delay." in text
    assert "Silencing fast (its output zeroed) costs 50 points here" in text  # depends only
    summary = memory_loop.describe(result)
    assert "Freezing mid's writes (its output kept) drops recall to 19 % on average" in summary
    assert "so mid's writes hold these facts; freezing fast costs at most 1 point " \
        "(within noise)" in summary


def test_the_lesson_attributes_its_own_measurement_by_freezing(monkeypatch):
    """The real measurement path (``evaluate``) on a model whose task says: silencing fast
    costs 40 points at every delay from 16 on, freezing it nothing; freezing cms_mid's writes
    costs 30. The lesson's result and texts name cms_mid, never fast."""
    lesson = memory_loop.MemoryLoopLesson(SMALL)
    model = lesson.untrained_model()
    delays = lesson.task.delays()

    def recall(model, device, silence=(), freeze=()):
        cost = 0.4 * ("fast" in silence) + 0.3 * ("cms_mid" in freeze)
        return {d: (0.06 if d < 16 else 0.7 - cost) for d in delays}

    monkeypatch.setattr(lesson.task, "recall_by_delay", recall)
    result = lesson.evaluate(model)
    assert result.delay.ablation == "freeze" and result.silenced.ablation == "silence"
    assert memory_loop.holder(result) == "cms_mid"
    texts = [memory_loop.describe_stage(result, s) for s in range(result.stages)]
    assert all("fast's writes" not in t and "so fast" not in t for t in texts)
    assert "so cms_mid's writes still hold the fact" in texts[delays.index(16) + 1]
    assert "Silencing fast (its output zeroed) costs 40 points here: the model depends on " \
        "its output" in texts[delays.index(16) + 1]
    assert "so cms_mid's writes hold these facts" in texts[-1]
    lesson.close()


def test_drops_within_noise_are_called_so():
    # 64 questions per delay (one kv_stream stream): a 10-point drop at recall 40 % is noise
    full = [0.06, 0.4, 0.4]
    result = _result(full, {"a": [0.06, 0.3, 0.4], "b": full}, questions=64)
    assert memory_loop.noise(0.4, 0.3, 64) > 0.1
    assert memory_loop.holder(result) is None
    text = memory_loop.describe_stage(result, 2)
    assert "Freezing a's writes costs the most here, 10 points, but that is within noise " \
        "(64 questions)" in text and "still hold" not in text
    # the same drop on 10 000 questions is a clear one
    assert memory_loop.holder(_result(full, {"a": [0.06, 0.3, 0.4], "b": full})) == "a"


def _with_return(result, first, relearned, frozen, questions):
    r = result.returns
    row = lambda full, slow: np.array([[full] * 2] + [[full] * 2] * (len(r.names) - 2)  # noqa
                                      + [[slow] * 2])
    return dataclasses.replace(result, returns=dataclasses.replace(
        r, first_sight=row(first, first), held=row(0.2, 0.2),
        relearned=row(relearned, frozen), questions=np.array([questions] * 2)))


def test_the_return_says_when_the_slow_levels_writes_make_no_difference_beyond_noise():
    base = _result([0.06, 0.6, 0.5], {"a": [0.06, 0.1, 0.5], "slow": [0.06, 0.6, 0.5]})
    assert memory_loop.slowest_level(base) == "slow"
    few = memory_loop.describe(_with_return(base, 0.58, 0.62, 0.59, 64))
    assert "first time: 58 %, no faster than the first time, within noise" in few
    assert "with slow's writes frozen, 59 % (within noise of the full model: no sign that " \
        "slow's writes held it; 128 questions per pass)" in few
    many = memory_loop.describe(_with_return(base, 0.40, 0.62, 0.45, 5000))
    assert "first time: 40 %, 22 points above the first time" in many
    assert "with slow's writes frozen, 45 % (17 points less: slow's writes held part of it" \
        in many


def test_memory_loop_reports_the_trainers_failure():
    lesson = memory_loop.MemoryLoopLesson(SMALL)
    lesson.project["train"]["optimizer"]["lr"] = 10.0  # the weights blow up
    with pytest.raises(RuntimeError, match="diverged"):
        lesson.run(4, memory_loop.LoopJob())
    assert lesson.result is None
    lesson.close()
