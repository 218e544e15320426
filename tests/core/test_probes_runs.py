"""Probes and run-folder plumbing that need no model: spectra, tables, CSV tailing."""
import numpy as np
import pytest

from nlstudio import probes
from nlstudio.runs import (CsvAppender, DelayRow, LevelMetrics, RunFollower, StepMetrics,
                           cut_after_step, metric_columns)


def row(step, loss=1.0, **levels):
    return StepMetrics(step, 0.1 * step, loss, 0.1, 10.0,
                       {lid: LevelMetrics(u, 0.5) for lid, u in levels.items()})


@pytest.mark.parametrize("period", [4, 8, 16])
def test_power_spectrum_peaks_at_the_write_frequency(period):
    series = np.zeros(512)
    series[period - 1::period] = 1.0  # a write every `period` tokens
    freqs, power = probes.power_spectrum(series)
    assert freqs[np.argmax(power)] == pytest.approx(1.0 / period)


def test_power_spectrum_of_constant_or_frozen_series_is_flat_zero():
    freqs, power = probes.power_spectrum(np.zeros(256))
    assert len(freqs) == 128 and np.allclose(power, 0)
    _, power = probes.power_spectrum(np.ones(256))
    assert np.allclose(power, 0)


def test_designed_frequency():
    assert probes.designed_frequency("attention", None) == np.inf
    assert probes.designed_frequency("mlp", None) == 0.0
    assert probes.designed_frequency("mlp", 16) == 1 / 16


def test_forgetting_curves_and_delay_table():
    rows = [(20, "mapping 0", 0.5), (10, "mapping 0", 0.9), (20, "mapping 1", 0.8)]
    curves = probes.forgetting_curves(rows)
    assert list(curves["mapping 0"][0]) == [10, 20]
    assert list(curves["mapping 0"][1]) == [0.9, 0.5]
    drows = [(5, "none", 8, 1.0), (5, "none", 64, 0.6), (5, "fast", 8, 0.2), (5, "fast", 64, 0.6),
             (1, "none", 8, 0.0)]
    names, delays, table = probes.delay_table(drows)
    assert names == ["none", "fast"] and list(delays) == [8, 64]
    np.testing.assert_allclose(table, [[1.0, 0.6], [0.2, 0.6]])
    levels, drop = probes.ablation_drop(names, table)
    assert levels == ["fast"]
    np.testing.assert_allclose(drop, [[0.8, 0.0]])


def test_delay_table_picks_one_ablation_kind():
    rows = [DelayRow(5, "none", 8, 1.0, "none"), DelayRow(5, "fast", 8, 0.2, "silence"),
            DelayRow(5, "fast", 8, 0.9, "freeze")]
    for ablation, expected in (("silence", 0.2), ("freeze", 0.9)):
        names, delays, table = probes.delay_table(rows, ablation=ablation)
        assert names == ["none", "fast"] and list(delays) == [8]
        np.testing.assert_allclose(table, [[1.0], [expected]])


def test_follower_reads_only_new_rows_and_keeps_torn_lines(tmp_path):
    cols = metric_columns(["a"])
    out = CsvAppender(tmp_path / "metrics.csv", cols)
    follower = RunFollower(tmp_path)
    assert follower.poll().metrics_rows == []
    out.append(row(1, 2.0, a=4).cells(cols))
    update = follower.poll()
    rows = update.metrics_rows
    assert [r["step"] for r in rows] == [1.0] and rows[0]["a.updates"] == 4
    assert update.rows == [row(1, 2.0, a=4)]  # typed rows round-trip exactly
    with open(tmp_path / "metrics.csv", "a") as fh:  # a writer caught mid-line
        fh.write("2,0.2,1.5")
        fh.flush()
        assert follower.poll().metrics_rows == []
        fh.write(",0.2,11,8,0.4\n")
    rows = follower.poll().metrics_rows
    assert [r["step"] for r in rows] == [2.0] and rows[0]["loss"] == 1.5
    assert list(follower.metrics_columns()["step"]) == [1.0, 2.0]
    out.close()


def test_cut_after_step_drops_later_rows_and_torn_lines(tmp_path):
    path = tmp_path / "metrics.csv"
    path.write_text("step,loss\n1,3.0\n2,2.0\n3,1.0\n4,0.")
    cut_after_step(path, 2)
    assert path.read_text() == "step,loss\n1,3.0\n2,2.0\n"


def test_follower_starts_over_when_a_resume_truncates_the_files(tmp_path):
    cols = metric_columns([])
    out = CsvAppender(tmp_path / "metrics.csv", cols)
    for step in (1, 2, 3):
        out.append(row(step).cells(cols))
    out.close()
    follower = RunFollower(tmp_path)
    assert len(follower.poll().metrics_rows) == 3
    cut_after_step(tmp_path / "metrics.csv", 1)  # a resume from step 1
    out = CsvAppender(tmp_path / "metrics.csv", cols)
    out.append(row(2, 0.5).cells(cols))
    out.close()
    update = follower.poll()
    assert update.reset
    assert list(follower.metrics_columns()["step"]) == [1.0, 2.0]
    assert list(follower.metrics_columns()["loss"]) == [1.0, 0.5]
