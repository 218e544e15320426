"""The content rate (``nlstudio.probes``, "Content rate"): how fast what a level returns
changes, and its nulls. The drift sums match their definition; a wholesale overwrite every C
tokens measures 1/C; partial writes at the same times measure less; random write amplitudes
at the same times change the measurement while the write schedule's spectrum cannot tell
them apart; frozen writes measure 0; attention re-reads (∞); real levels agree."""
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from nlstudio import probes
from nlstudio.models import build_model

F = 128  # content features per stream
RNG = np.random.default_rng(7)
WRITES = RNG.normal(size=(256, 2, F)) / math.sqrt(F)  # unrelated unit-ish contents


def measured(period: int, write, tokens: int = 512, streams: int = 2):
    """The rate of a synthetic level written at every multiple of ``period`` tokens:
    ``write(memory, k) -> memory`` after its k-th write (contents [streams, F])."""
    contents, memory = [np.zeros((streams, F))], np.zeros((streams, F))
    index = np.zeros(tokens, np.int64)
    for k in range(tokens // period):
        memory = write(memory, k)
        contents.append(memory.copy())
        index[(k + 1) * period - 1:] = k + 1
    max_lag = tokens // 2
    replaced, energy = probes.drift_sums(np.stack(contents), index, max_lag)
    return probes.content_rate("mlp", period, np.arange(1, max_lag + 1), replaced, energy,
                               writes_per_token=1 / period, tokens=tokens, sequences=streams)


# ---- the definition --------------------------------------------------------------------------
@settings(max_examples=40, deadline=None)
@given(st.integers(1, 6), st.integers(1, 3), st.integers(2, 24), st.integers(0, 2**31 - 1))
def test_drift_sums_match_their_definition(n, streams, tokens, seed):
    rng = np.random.default_rng(seed)
    contents = rng.normal(size=(n + 1, streams, 5))
    contents[0] = 0.0  # before the first write
    index = np.sort(rng.integers(0, n + 1, tokens))
    max_lag = max(1, tokens // 2)
    replaced, energy = probes.drift_sums(contents, index, max_lag)
    for lag in range(1, max_lag + 1):
        num = den = 0.0
        for t in range(tokens - lag):
            if index[t] == 0:  # no content yet at the reference position
                continue
            a, b = contents[index[t]], contents[index[t + lag]]
            num += float(((b - a) ** 2).sum())
            den += float((a ** 2).sum() + (b ** 2).sum())
        assert replaced[lag - 1] == pytest.approx(num, rel=1e-9, abs=1e-9)
        assert energy[lag - 1] == pytest.approx(den, rel=1e-9, abs=1e-9)


def test_half_lag_interpolates_and_the_rate_is_one_over_twice_it():
    lags = np.arange(1, 9)
    drift = lags / 10.0  # reaches ½ at 5
    assert probes.half_lag(lags, drift) == pytest.approx(5.0)
    assert probes.half_lag(lags, np.full(8, 0.2)) is None
    assert probes.half_lag(lags, np.r_[0.8, np.ones(7)]) == pytest.approx(0.625)  # D(0) = 0
    rate = probes.content_rate("mlp", 4, lags, drift, np.ones(8), writes_per_token=0.25,
                               tokens=16, sequences=1)
    assert rate.turnover == pytest.approx(10.0) and rate.frequency == pytest.approx(0.1)
    assert not rate.bound and probes.content_text(rate) == "1/10"


def test_never_changing_content_measures_zero_and_slow_content_a_bound():
    lags = np.arange(1, 65)
    never = probes.content_rate("mlp", None, lags, np.zeros(64), np.zeros(64),
                                writes_per_token=0.0, tokens=128, sequences=1)
    assert never.frequency == 0.0 and math.isinf(never.turnover) and not never.bound
    assert probes.content_text(never) == "0 (never changes)"
    slow = probes.content_rate("mlp", 16, lags, lags / 1000, np.ones(64),
                               writes_per_token=1 / 16, tokens=128, sequences=1)
    assert slow.bound and slow.frequency == pytest.approx(1 / 128)
    assert probes.content_text(slow) == "< 1/128"


# ---- what it measures, and the nulls ---------------------------------------------------------
@pytest.mark.parametrize("period", [4, 8, 16])
def test_a_wholesale_overwrite_every_c_tokens_measures_one_over_c(period):
    rate = measured(period, lambda memory, k: WRITES[k])
    assert rate.frequency == pytest.approx(1 / period, rel=0.1)


def test_overwriting_everything_turns_over_faster_than_small_writes_at_the_same_period():
    overwrite = measured(8, lambda memory, k: WRITES[k])
    small = measured(8, lambda memory, k: memory + 0.1 * (WRITES[k] - memory))
    assert overwrite.writes_per_token == small.writes_per_token  # the same schedule
    assert overwrite.frequency > 4 * small.frequency
    assert overwrite.turnover < small.turnover


def test_random_write_amplitudes_at_the_same_times_change_the_content_rate_not_the_schedule():
    """Delta-style writes ``a_k (w_k − M)`` every 8 tokens: constant a = 0.1 against random
    a_k. The write-norm spectrum (the schedule) peaks at 1/8 for both; the content rate
    differs."""
    amplitudes = RNG.uniform(0.0, 1.0, 256)
    constant = measured(8, lambda memory, k: memory + 0.1 * (WRITES[k] - memory))
    random = measured(8, lambda memory, k: memory + amplitudes[k] * (WRITES[k] - memory))
    assert random.frequency > 2 * constant.frequency
    for a in (np.full(64, 0.1), amplitudes[:64]):
        norms = np.zeros(512)
        norms[7::8] = a  # the write norms at the same times
        freqs, power = probes.power_spectrum(norms)
        assert freqs[np.argmax(power)] == pytest.approx(1 / 8)


def test_pooling_adds_the_drift_sums():
    a = measured(8, lambda memory, k: WRITES[k], streams=2)
    b = measured(8, lambda memory, k: 0.5 * memory + WRITES[k], streams=2)
    pooled = probes.pool_content([a, b])
    np.testing.assert_allclose(pooled.replaced, a.replaced + b.replaced)
    np.testing.assert_allclose(pooled.energy, a.energy + b.energy)
    assert pooled.sequences == 4
    assert min(a.frequency, b.frequency) <= pooled.frequency <= max(a.frequency, b.frequency)
    assert probes.pool_content([a]) is a and probes.pool_content([]) is None


# ---- real levels -----------------------------------------------------------------------------
def model_of(levels, d_model=32, vocab=24, seed=0):
    torch.manual_seed(seed)
    ids = [lv["id"] for lv in levels]
    edges = [["input", ids[0]], *[[a, b] for a, b in zip(ids, ids[1:])], [ids[-1], "output"]]
    return build_model({"d_model": d_model, "heads": 2, "levels": levels, "edges": edges},
                       vocab_size=vocab)


def stream(vocab=24, streams=2, tokens=64, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, vocab, (streams, tokens), generator=g)
    y = torch.roll(x, -1, dims=1)
    y[:, -1] = -100
    return x, y


MIXED = [{"id": "attn", "kind": "attention", "period": None},
         {"id": "mem", "kind": "titans", "period": 4, "optimizer": {"name": "sgd", "eta": 0.5}},
         {"id": "cms", "kind": "mlp", "period": 8, "optimizer": {"name": "sgd", "eta": 0.5}},
         {"id": "frozen", "kind": "mlp", "period": None}]


def test_real_levels_attention_rereads_frozen_levels_measure_zero():
    model = model_of(MIXED)
    x, y = stream()
    rates = probes.measure_content(model, x, y)
    assert list(rates) == ["attn", "mem", "cms", "frozen"]
    attn = rates["attn"]
    assert attn.rereads and len(attn.lags) == 0 and probes.content_text(attn).startswith("∞")
    assert rates["frozen"].frequency == 0.0 and rates["frozen"].writes_per_token == 0.0
    for lid, period in (("mem", 4), ("cms", 8)):
        assert rates[lid].frequency > 0 and rates[lid].writes_per_token == 1 / period
    # the same levels with their writes stopped by the model's freeze ablation: nothing
    # changes, whatever the schedule would have been
    frozen = probes.measure_content(model, x, y, freeze=("mem", "cms"))
    for lid in ("mem", "cms"):
        assert frozen[lid].frequency == 0.0 and not frozen[lid].bound
        assert float(frozen[lid].drift.max()) == 0.0
        assert frozen[lid].writes_per_token == 0.0


def test_reading_on_the_write_grid_equals_reading_after_every_token():
    model = model_of(MIXED)
    x, y = stream()
    assert probes.write_grid(model, 64) == 4
    grid = probes.measure_content(model, x, y)
    every = probes.measure_content(model, x, y, grid=1)
    for lid in ("mem", "cms"):
        np.testing.assert_allclose(grid[lid].replaced, every[lid].replaced, rtol=1e-6,
                                   atol=1e-9)
        np.testing.assert_allclose(grid[lid].energy, every[lid].energy, rtol=1e-6, atol=1e-9)


def test_pooled_streams_equal_one_measurement_of_all_of_them():
    model = model_of(MIXED)
    x, y = stream(streams=2)
    both = probes.measure_content(model, x, y)["cms"]
    pooled = probes.pool_content([probes.measure_content(model, x[:1], y[:1])["cms"],
                                  probes.measure_content(model, x[1:], y[1:])["cms"]])
    np.testing.assert_allclose(pooled.replaced, both.replaced, rtol=1e-5)
    np.testing.assert_allclose(pooled.energy, both.energy, rtol=1e-5)


def test_a_delta_rule_that_forgets_everything_at_each_token_measures_its_design():
    """The same delta level (written every token, designed frequency 1): with its gate
    closed (α ≈ 0) and full steps every write replaces the whole memory: ν = 1; with small
    steps (η = 0.05) and no forgetting the writes come at the same times and replace less."""
    def rate(eta, forget):
        level = {"id": "delta", "kind": "delta", "period": 1, "gate": forget,
                 "optimizer": {"name": "sgd", "eta": eta}}
        model = model_of([level])
        delta = model.levels["delta"]
        with torch.no_grad():
            delta.eta_proj.bias.fill_(10.0)  # β = η σ(·) ≈ η
            if forget:
                delta.alpha_proj.weight.zero_()
                delta.alpha_proj.bias.fill_(-30.0)  # α ≈ e^-30: nothing kept
        return probes.measure_content(model, *stream(tokens=96))["delta"]

    overwrite, small = rate(1.0, True), rate(0.05, False)
    assert overwrite.writes_per_token == small.writes_per_token == 1.0  # the same schedule
    assert overwrite.frequency == pytest.approx(overwrite.designed, rel=0.1)
    assert np.all(overwrite.drift > small.drift)
    assert overwrite.frequency > 10 * small.frequency


def test_content_rates_of_a_task_use_its_held_out_examples():
    from nlstudio.tasks import get_task

    task = get_task("kv_stream")({"num_keys": 32, "value_vocab": 16, "pairs_per_mapping": 4,
                                  "segment_len": 16}, seq_len=64, seed=0)
    inputs, targets = probes.content_stream(task, sequences=2)
    assert inputs.shape == (2, 64)
    torch.testing.assert_close(inputs[1], task.example(1).inputs[0])
    model = model_of(MIXED, vocab=task.vocab_size)
    rates = probes.content_rates(model, task, sequences=2)
    assert rates["cms"].tokens == 64 and rates["cms"].sequences == 2
    assert len(rates["cms"].lags) == 32
