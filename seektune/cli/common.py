"""What the commands share: quiet libraries, one-line errors, and the summaries they print.

    from seektune.cli.common import console, fail, guard     # inside a command of seektune/cli/__init__.py
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

console = Console()
err = Console(stderr=True)


def _quiet_libraries() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    logging.basicConfig(level=logging.INFO, format="seektune: %(message)s")
    for name in ("transformers", "datasets", "peft", "trl", "accelerate", "httpx", "urllib3", "absl",
                 "huggingface_hub"):
        logging.getLogger(name).setLevel(logging.ERROR)
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()  # weight-loading bars; training and generation keep theirs
    import warnings

    warnings.filterwarnings("ignore", category=UserWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)


def _fail(message: str, code: int = 2) -> None:
    from rich.markup import escape

    # escaped: messages quote recipe values and file text, where "[...]" is data, not Rich markup
    err.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def _load(recipe: Path, overrides: list[str] | None):
    from seektune.recipe import RecipeError, load_recipe

    try:
        return load_recipe(recipe, overrides or [])
    except RecipeError as exc:
        _fail(str(exc))


def _guard(func, *args):
    """Run a stage, turning expected user errors into one clear line and a non-zero exit."""
    from seektune.data.io import DataPathError
    from seektune.models.load import ModelNotFound
    from seektune.recipe import RecipeError
    from seektune.synth.teacher import TeacherError
    from seektune.train.checkpoint import NonFiniteLoss
    from seektune.train.memory import MemoryTooSmall
    from seektune.train.methods import MethodUnavailable

    try:
        return func(*args)
    except (RecipeError, DataPathError, ModelNotFound, FileNotFoundError, FileExistsError, ValueError,
            MethodUnavailable, MemoryTooSmall, TeacherError) as exc:
        _fail(str(exc))
    except NonFiniteLoss as exc:
        _fail(str(exc), code=3)


def print_prepare_summary(run_dir: Path) -> None:
    from seektune.data.prepare import rejects_of
    from seektune.runs import RunDir

    run = RunDir(run_dir)
    summary = json.loads(run.data_summary.read_text(encoding="utf-8"))
    splits = ", ".join(f"{k} {v}" for k, v in summary["splits"].items())
    console.print(f"data: read {summary['read']} rows, kept {summary['kept']} ({splits}), "
                  f"rejected {summary['rejected']}", soft_wrap=True)
    if summary.get("length_fit") and summary.get("length_fit_settings"):
        from rich.markup import escape

        from seektune.data.language_fit import length_warnings

        settings = summary["length_fit_settings"]
        for warning in length_warnings(summary["length_fit"], settings["max_length"], settings["overlength"],
                                       summary.get("length_fit_model", "the model")):
            console.print(f"  [bold yellow]warning:[/] {escape(warning)}", highlight=False, soft_wrap=True)
    if summary.get("language_fit"):
        from rich.markup import escape

        from seektune.data.language_fit import summary_line, warnings_for

        fit, model = summary["language_fit"], summary["language_fit_model"]
        console.print(escape(summary_line(fit, model)), highlight=False, soft_wrap=True)
        for warning in warnings_for(fit, model):
            console.print(f"  [bold yellow]warning:[/] {escape(warning)}", highlight=False, soft_wrap=True)
    rejects = rejects_of(run_dir)
    for reject in rejects[:20]:
        console.print(f"  [yellow]rejected[/] {reject['origin']}: {reject['reason']} - {reject['detail']}",
                      highlight=False, soft_wrap=True)
    if len(rejects) > 20:
        console.print(f"  ... and {len(rejects) - 20} more in {run.rejects}")


def print_export(record: dict) -> None:
    where = record.get("file") or record.get("dir")
    console.print(f"exported {record['source_run']} -> {record['target']}: {where}", highlight=False, soft_wrap=True)
    for key, value in record.items():
        if key in {"parity", "speed", "sizes"} and isinstance(value, dict):
            shown = ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in value.items())
            console.print(f"  {key}: {shown}", highlight=False, soft_wrap=True)


def print_update(result: dict) -> None:
    replay = result["replay"]
    console.print(f"updated run: {result['out']}  ({replay['new_train_rows']} new + {replay['replay_rows']} "
                  f"replayed training rows)", highlight=False, soft_wrap=True)
    if "new" not in result:
        return
    table = Table(title="before -> after the update")
    for column in ("split", "metric", "before", "after", "change"):
        table.add_column(column, justify="left" if column in ("split", "metric") else "right")
    for split, change_key, label in (("new", "gain", "new"), ("old", "forgetting", "old (forgetting)")):
        part = result[split]
        for metric in ("fact_accuracy", "rougeL"):
            before, after = part["before"].get(metric), part["after"].get(metric)
            if before is None or after is None:
                continue
            table.add_row(f"{label} (n={part['after'].get('n')})", metric, f"{before:.3f}", f"{after:.3f}",
                          f"{after - before:+.3f}")
    console.print(table)
