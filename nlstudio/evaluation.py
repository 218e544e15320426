"""One evaluation of a model at a step, measured by one routine for the trainer (every
``eval_every`` steps: eval.csv, delay.csv and the :class:`~nlstudio.events.Evaluation` event)
and for ``nlstudio eval`` (printed), so that the two never differ: the task's evaluation rows,
recall by delay under both per-level ablations, and every level's content rate
(``nlstudio.probes`` defines the measurements)."""
from __future__ import annotations

from nlstudio import events as ev
from nlstudio import probes


def measure_recall(task, model, device, level_ids) -> tuple[tuple[int, ...], dict]:
    """Recall by delay for the full model and under both ablations:
    ``(delays, {"silence": {"": full, level: recall, ...}, "freeze": {"": full, ...}})``
    (silence: each level's output zeroed, what the model depends on; freeze: its in-context
    writes stopped, its output kept, what it stores; parametric levels only). What delay.csv
    stores and ``nlstudio eval`` prints, one table per ablation kind."""
    delays, tables = probes.recall_by_delay_ablations(task, model, device, level_ids)
    return tuple(delays), tables


def evaluate(run_id: str, task, model, device, level_ids, step: int | None) -> ev.Evaluation:
    """Everything an evaluation at ``step`` measures (``None``: the task's default sub-tasks,
    see ``Task.evaluate``), as the event the trainer publishes. The caller puts the model in
    eval mode; its parameters do not change."""
    rows = tuple((r.task, float(r.metric)) for r in task.evaluate(model, device, step=step))
    delays, ablations = measure_recall(task, model, device, level_ids)
    content = probes.content_rates(model, task, device)
    return ev.Evaluation(run_id, 0 if step is None else step, rows, task.metric_name, delays,
                         ablations.get("silence", {}), ablations.get("freeze", {}), content)
