"""Run folders: written by the trainer (``writer``), read back (``reader``) or followed live
(``follower``) by anyone. The folder's layout is described in :mod:`nlstudio.runs.layout`,
its rows in :mod:`nlstudio.runs.rows`, its checkpoints in :mod:`nlstudio.runs.checkpoint`.

Every public name is importable from ``nlstudio.runs``.
"""
from nlstudio.runs.checkpoint import Checkpoint, latest_checkpoint
from nlstudio.runs.csvfile import CsvAppender, cut_after_step, cut_to
from nlstudio.runs.follower import MetricsTable, RunFollower, RunUpdate
from nlstudio.runs.layout import (CHECKPOINT_FILE, CHECKPOINTS_DIR, CSV_FILES, DELAY_FILE,
                                  ERROR_LOG, EVAL_FILE, METRICS_FILE, MODEL_FILE, PLOTS_DIR,
                                  PROJECT_FILE, RUN_ENTRIES, STATUS_FILE, RunError,
                                  default_run_dir,
                                  is_run_dir)
from nlstudio.runs.reader import (Run, load_run, load_weights_into, read_checkpoint,
                                  weights_step)
from nlstudio.runs.rows import (ABLATIONS, BASE_METRIC_COLUMNS, DELAY_COLUMNS, EVAL_COLUMNS,
                                LEGACY_DELAY_COLUMNS, DelayRow, EvalRecord, LevelMetrics,
                                StepMetrics, metric_columns)
from nlstudio.runs.status import is_live, read_status
from nlstudio.runs.writer import RunWriter, check_rows, new_run_folder_problem

__all__ = [
    "Checkpoint", "latest_checkpoint", "CsvAppender", "cut_after_step", "cut_to",
    "MetricsTable", "RunFollower", "RunUpdate", "CHECKPOINT_FILE", "CHECKPOINTS_DIR",
    "CSV_FILES", "DELAY_FILE", "ERROR_LOG", "EVAL_FILE", "METRICS_FILE", "MODEL_FILE",
    "PLOTS_DIR", "PROJECT_FILE", "STATUS_FILE", "RunError", "default_run_dir", "is_run_dir",
    "Run", "load_run", "load_weights_into", "read_checkpoint", "weights_step", "ABLATIONS",
    "BASE_METRIC_COLUMNS", "DELAY_COLUMNS", "EVAL_COLUMNS", "LEGACY_DELAY_COLUMNS", "DelayRow",
    "EvalRecord", "LevelMetrics", "StepMetrics", "metric_columns", "is_live", "read_status",
    "RunWriter", "check_rows", "RUN_ENTRIES", "new_run_folder_problem",
]
