"""The ``seektune`` command line: one thin command per stage.

    seektune run examples/customer-service/recipe.yaml
"""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from seektune.cli.index import index_command
from seektune.cli.studio import studio_command
from seektune.cli.common import (
    _fail, _guard, _load, _quiet_libraries, console, err, print_export, print_prepare_summary, print_update,
)

app = typer.Typer(
    help="Fine-tune a chat model into a domain assistant: prepare data, train, evaluate against the base model, chat.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

RecipeArg = Annotated[Path, typer.Argument(help="Recipe YAML describing the run (model, data, method, train, eval).")]
OverridesArg = Annotated[
    list[str] | None,
    typer.Argument(help="Overrides as key.sub=value, e.g. train.lr=5e-4 output_dir=runs/try2.", show_default=False),
]
RunArg = Annotated[Path, typer.Argument(help="A run directory written by `seektune train` or `seektune run`.")]
RagOption = Annotated[Path | None, typer.Option(
    "--rag", help="A `seektune index` directory: each question is answered from its passages, which are cited.",
    show_default=False)]
RagKOption = Annotated[int, typer.Option("--rag-k", min=1, max=20, help="Passages retrieved per question.")]
GlossaryOption = Annotated[Path | None, typer.Option(
    "--glossary", help="A glossary (.txt .csv .yaml: term, forbidden variants, note): its forbidden variants can "
    "never be generated.", show_default=False)]


def _is_classification_run(target: str) -> bool:
    from seektune.runs import RunDir

    run = RunDir(target)
    return run.is_run() and _guard(run.recipe).task == "classification"


@app.command()
def prepare(recipe: RecipeArg, overrides: OverridesArg = None) -> None:
    """Read, convert, check and split the recipe's data into <output_dir>/data/."""
    _quiet_libraries()
    loaded = _load(recipe, overrides)
    run_dir = _guard(_prepare_stage(loaded), loaded)
    print_prepare_summary(run_dir)


@app.command()
def synth(recipe: RecipeArg, overrides: OverridesArg = None) -> None:
    """Documents -> question/answer pairs by a teacher, quality-gated, stored for review in <output_dir>/synth/.

    Then `seektune review RUN` to accept, edit or reject them. A rerun asks the teacher only what it has
    not answered yet (killed half-way, nothing is asked twice)."""
    _quiet_libraries()
    loaded = _load(recipe, overrides)
    from seektune.synth.run import run as synth_run

    _guard(synth_run, loaded)


app.command(name="index")(index_command)
app.command(name="studio")(studio_command)


def _prepare_stage(recipe):
    """prepare.run, or for a ``stages:`` recipe the function that prepares every stage."""
    if recipe.stages:
        from seektune.train import stages

        return stages.prepare
    from seektune.data import prepare

    return prepare.run


@app.command()
def train(
    recipe: RecipeArg,
    overrides: OverridesArg = None,
    nproc: Annotated[
        int,
        typer.Option(help="Processes for data-parallel training (DDP through torchrun: one per GPU, or gloo on CPU). "
                     "For FSDP / DeepSpeed use `accelerate launch --config_file configs/accelerate/<file> -m seektune "
                     "train ...`."),
    ] = 1,
) -> None:
    """Fine-tune the recipe's model (prepares the data first if needed); writes <output_dir>/adapter/."""
    _quiet_libraries()
    from seektune.train import run as train_router

    loaded = _load(recipe, overrides)
    if nproc > 1 and "LOCAL_RANK" not in os.environ:
        run_distributed(loaded, recipe, overrides or [], nproc)
        return
    run_dir = _guard(train_router.run, loaded)
    if int(os.environ.get("RANK", "0")) == 0:
        console.print(f"trained model written to {run_dir}")


def run_distributed(loaded, recipe: Path, overrides: list[str], nproc: int) -> None:
    """Prepare the data once here, then start ``nproc`` workers with torchrun; each runs `seektune train`."""
    import subprocess

    from seektune.data import prepare as prepare_stage
    from seektune.runs import run_of

    if loaded.stages:
        _fail("--nproc trains one recipe; for a stages: recipe launch `accelerate launch -m seektune train ...`")
    if not run_of(loaded).is_prepared():
        _guard(prepare_stage.run, loaded)
    if loaded.objective == "distill":  # the workers read the teacher's cached targets; the teacher runs here, once
        from seektune.train import distill

        _guard(distill.prepare_teacher, loaded)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
               "-m", "seektune", "train", str(recipe), *overrides]
    console.print(f"launching {nproc} processes: {' '.join(command[2:])}", soft_wrap=True)
    code = subprocess.call(command)
    if code:
        _fail(f"distributed training failed (exit {code}); see the workers' output above", code)


@app.command(name="eval")
def eval_(
    target: Annotated[str, typer.Argument(help="A run directory, or a model (alias, local dir, .gguf, Hub id) "
                                          "with --data.")],
    overrides: Annotated[
        list[str] | None,
        typer.Argument(help="eval settings as key=value, e.g. max_rows=50 max_new_tokens=128 temperature=0.7 "
                       "cache=false (the recipe's eval: section); data.* keys map --data's fields, e.g. "
                       "data.columns.user=question data.columns.assistant=answer.", show_default=False),
    ] = None,
    against: Annotated[
        str | None,
        typer.Option(help="The baseline: 'base' (the run's untuned model, the default), 'none', another run "
                     "directory, a model, or an OpenAI-compatible endpoint URL such as http://127.0.0.1:8000/v1."),
    ] = None,
    against_model: Annotated[str, typer.Option(help="Model name sent to an --against endpoint.")] = "default",
    data: Annotated[
        Path | None,
        typer.Option(help="Test rows (any format `seektune prepare` reads) instead of the run's test split."),
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="Where results go when the target is a model (default runs/eval-<model>).")
    ] = None,
    judge: Annotated[
        str | None,
        typer.Option(help="An OpenAI-compatible endpoint URL whose model judges base vs tuned answers "
                     "(asked in both orders); overrides the recipe's eval.judge.endpoint."),
    ] = None,
    judge_model: Annotated[str | None, typer.Option(help="Model name sent to the judge endpoint.")] = None,
    fail_under: Annotated[
        str | None,
        typer.Option("--fail-under", help="Gates for CI, e.g. 'rougeL=0.3,win_rate=0.7,fact_accuracy=0.5': "
                     "exit 1 when a tuned-model figure is below its bar."),
    ] = None,
    rag: Annotated[
        Path | None,
        typer.Option("--rag", help="A retrieval index (`seektune index`): each system also answers with passages "
                     "from it, and the report compares base, base+rag, tuned and tuned+rag.", show_default=False),
    ] = None,
    rag_k: RagKOption = 4,
    out_of_scope: Annotated[
        Path | None,
        typer.Option("--out-of-scope", help="Questions the documents do not answer (rows as for --data; the answer "
                     "is not scored): how often each system declines instead of inventing. Needs --rag.",
                     show_default=False),
    ] = None,
    glossary: GlossaryOption = None,
) -> None:
    """Answer the test split with the tuned model and a baseline; write <run>/eval/ and <run>/report.html.

    Answers are cached in <run>/eval/cache.jsonl, so a re-run only generates what changed.
    """
    _quiet_libraries()
    from seektune.evaluate import stage
    from seektune.evaluate.compare import check_gates, parse_fail_under
    from seektune.evaluate.terminal import print_classification, print_metrics
    from seektune.runs import RunDir

    try:
        gates = parse_fail_under(fail_under) if fail_under else {}
    except ValueError as exc:
        _fail(f"--fail-under: {exc}")
    if _is_classification_run(target):  # scored beside its n-gram baseline, on its own eval split
        from seektune.train import classification

        if against not in (None, "base") or data or out or judge or judge_model or rag or out_of_scope:
            _fail("a classification run is scored on its own eval split, beside its n-gram baseline; "
                  "--against, --data, --out, --judge and --rag are for chat runs")
        metrics = _guard(classification.evaluate_run, target, overrides)
        print_classification(metrics, console)
        console.print(f"report: {RunDir(target).report_html}")
    else:
        judge_settings = {k: v for k, v in (("endpoint", judge), ("model", judge_model)) if v}

        def evaluate():
            return stage.run(target, against=against, against_model=against_model, data=data, out=out,
                             judge=judge_settings or None, overrides=overrides, rag=rag, rag_k=rag_k,
                             out_of_scope=out_of_scope, glossary=glossary)

        metrics = _guard(evaluate)
        print_metrics(metrics, console)
        results = RunDir(stage.results_dir(target, out))
        cache = metrics.get("cache", {}).get("reused", {})
        if any(cache.values()):
            console.print("reused cached answers: " + ", ".join(f"{k} {v}" for k, v in cache.items()))
        console.print(f"answers side by side: {results.samples}\nreport: {results.report_html}")
    failures = check_gates(metrics["tuned"], gates) if gates else []
    for failure in failures:
        err.print(f"[bold red]gate failed:[/] {failure}", highlight=False, soft_wrap=True)
    if failures:
        raise typer.Exit(1)


@app.command(name="run")
def run_all(recipe: RecipeArg, overrides: OverridesArg = None) -> None:
    """The whole job: prepare -> train -> eval, then print base vs tuned."""
    _quiet_libraries()
    import time

    from seektune.evaluate import stage as eval_stage
    from seektune.evaluate.terminal import classification_hint, print_classification, print_metrics
    from seektune.runs import RunDir
    from seektune.train import run as train_router

    started = time.time()
    loaded = _load(recipe, overrides)
    console.rule("[bold]1/3 prepare")
    run_dir = _guard(_prepare_stage(loaded), loaded)
    print_prepare_summary(run_dir)
    console.rule("[bold]2/3 train")
    _guard(train_router.run, loaded)
    console.rule("[bold]3/3 evaluate")
    if loaded.task == "classification":  # the train stage scored it (when there is a test split)
        run = RunDir(run_dir)
        if run.metrics.is_file():
            print_classification(json.loads(run.metrics.read_text(encoding="utf-8")), console)
            console.print(f"report: {run.report_html}")
        hint = classification_hint(run_dir)
    else:
        metrics = _guard(eval_stage.run, run_dir)
        print_metrics(metrics, console)
        hint = f"try it: seektune chat {run_dir}"
    minutes = (time.time() - started) / 60
    console.print(f"run directory: {run_dir}  ({minutes:.1f} min)\n{hint}", highlight=False, soft_wrap=True)


@app.command()
def chat(
    target: Annotated[str, typer.Argument(help="A run directory, or a model (alias, local dir, .gguf, Hub id).")],
    message: Annotated[
        str | None, typer.Option("--message", "-m", help="Ask one question, print the answer and exit.")
    ] = None,
    max_new_tokens: Annotated[int, typer.Option(help="Longest answer, in tokens.")] = 256,
    backend: Annotated[
        str, typer.Option(help="torch (the run or model as trained), onnx or int8 (its export from "
                          "`seektune export`; a run directory or the export directory itself).")
    ] = "torch",
    rag: RagOption = None,
    rag_k: RagKOption = 4,
    glossary: GlossaryOption = None,
) -> None:
    """Chat with a tuned run (or any model) in the terminal; answers stream as they are generated."""
    _quiet_libraries()
    from seektune import chat as chat_stage

    _guard(chat_stage.run, target, message, max_new_tokens, backend, rag, rag_k, glossary)


@app.command()
def export(
    run: RunArg,
    to: Annotated[str, typer.Option(help="merged (HF safetensors), int8 (CPU int8 weights), onnx (onnxruntime) "
                                    "or gguf (llama.cpp / Ollama).")],
    quant: Annotated[
        str | None, typer.Option(help="gguf only: f16 (default), f32, q8_0 or q4_0.")
    ] = None,
    dtype: Annotated[
        str | None, typer.Option(help="merged only: float32, bfloat16 or float16 (default: as the base).")
    ] = None,
    force: Annotated[bool, typer.Option(help="Overwrite an earlier export of the same target.")] = False,
    verify: Annotated[
        bool, typer.Option(help="Check the export against the trained model (logits, greedy answers, perplexity) "
                           "and record the figures in export.json.")
    ] = True,
) -> None:
    """Export a run for other runtimes into <run>/export/<target>/, with an export.json of sizes and parity."""
    _quiet_libraries()
    from seektune.export import stage as export_stage

    record = _guard(lambda: export_stage.run(run, to, quant=quant, dtype=dtype, force=force, verify=verify))
    print_export(record)


@app.command()
def report(run: RunArg) -> None:
    """(Re)write <run>/report.html and report.json from what the run directory holds (no generation)."""
    from seektune.evaluate.report import write_report

    html_path, json_path = _guard(write_report, run)
    console.print(f"report: {html_path}\nnumbers: {json_path}")


@app.command()
def compare(
    runs: Annotated[list[Path], typer.Argument(help="Two or more evaluated run directories.")],
    out: Annotated[Path, typer.Option(help="Where to write the HTML table and chart (compare.json beside it).")] =
    Path("compare.html"),
) -> None:
    """Put several runs' tuned-model metrics side by side (e.g. LoRA r=8 vs r=16 vs full)."""
    from seektune.evaluate.report import compare_runs, compare_table_rows

    result = _guard(compare_runs, runs, out)
    header, rows = compare_table_rows(result)
    table = Table(title="runs compared (tuned model on each run's eval split)")
    for name in header:
        table.add_column(name, justify="left" if name == header[0] else "right")
    for row in rows:
        table.add_row(*row)
    console.print(table)
    best = result.get("best", {})
    if best:
        console.print("best: " + ", ".join(f"{metric} {run}" for metric, run in best.items()), highlight=False,
                      soft_wrap=True)
    console.print(f"table and chart: {out}")


human_app = typer.Typer(help="Blind side-by-side rating by people: export sheets, collect them, import the scores.",
                        no_args_is_help=True)
app.add_typer(human_app, name="human-eval")


@human_app.command("export")
def human_export(
    run: RunArg,
    raters: Annotated[int, typer.Option(help="How many raters get a sheet (each a different order).")] = 3,
    max_items: Annotated[int | None, typer.Option(help="Rate a random subset of this many rows.")] = None,
    criteria: Annotated[str, typer.Option(help="Comma-separated 1-5 criteria.")] =
    "accuracy,relevance,completeness,helpfulness,safety",
    seed: Annotated[int, typer.Option(help="Seed for the blind ordering.")] = 0,
    force: Annotated[bool, typer.Option(help="Replace sheets that were already filled in.")] = False,
) -> None:
    """Write blind rating sheets (CSV + printable HTML) for base vs tuned to <run>/human_eval/."""
    from seektune.evaluate.human import export_sheets

    names = [c.strip() for c in criteria.split(",") if c.strip()]
    paths = _guard(lambda: export_sheets(run, raters=raters, seed=seed, max_items=max_items, criteria=names,
                                         force=force))
    for path in paths:
        console.print(f"  {path}", highlight=False)
    console.print(f"send each rater their sheet; then: seektune human-eval import {run} <filled sheets...>")


@human_app.command("import")
def human_import(
    run: RunArg,
    sheets: Annotated[list[Path], typer.Argument(help="Filled CSV sheets, any number of raters.")],
) -> None:
    """Un-blind filled sheets: mean score per system and criterion, Krippendorff's alpha between raters."""
    from seektune.evaluate.human import format_results, import_sheets
    from seektune.evaluate.report import write_report
    from seektune.runs import RunDir

    results = _guard(import_sheets, run, sheets)
    console.print(format_results(results), highlight=False)
    if RunDir(run).metrics.is_file():
        html_path, _ = write_report(run)
        console.print(f"report updated: {html_path}")


@app.command()
def serve(
    target: Annotated[str, typer.Argument(help="A run directory, or a model (alias, local dir, .gguf, Hub id).")],
    adapter: Annotated[
        list[str] | None,
        typer.Option(help="More adapters as name=RUN_DIR (repeatable); a request picks one with its `model` field."),
    ] = None,
    host: Annotated[str, typer.Option(help="Interface to listen on (0.0.0.0 for every interface).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    api_key: Annotated[
        str | None, typer.Option(envvar="SEEKTUNE_API_KEY", help="Require `Authorization: Bearer KEY` on every "
                                 "route but /health (also read from SEEKTUNE_API_KEY).")
    ] = None,
    max_batch: Annotated[int, typer.Option(help="Most requests generated together in one batch.")] = 8,
    max_concurrency: Annotated[int, typer.Option(help="Requests in flight before new ones get 429.")] = 64,
    max_tokens_cap: Annotated[int, typer.Option(help="Largest max_tokens a request may ask for.")] = 1024,
    cache_size: Annotated[int, typer.Option(help="Exact-match response cache entries for temperature-0 requests "
                                            "(0 turns it off).")] = 0,
    feedback_db: Annotated[
        Path | None,
        typer.Option(help="SQLite file for completions and user feedback (default: <run>/feedback.sqlite)."),
    ] = None,
    engine: Annotated[str, typer.Option(help="hf (transformers, any machine) or vllm (CUDA with vllm installed).")]
    = "hf",
    allowed_run_dir: Annotated[
        list[Path] | None,
        typer.Option(help="Directories --adapter runs may come from (repeatable; default: the served run's parent)."),
    ] = None,
    allowed_host: Annotated[list[str] | None, typer.Option(help="Host header names to answer (repeatable; '*' any; "
                            "default: --host, localhost, 127.0.0.1, [::1]); others get 400 (DNS rebinding).")] = None,
    body_timeout: Annotated[float, typer.Option(min=0.001, help="Seconds a request body may take to arrive; "
                                                "slower uploads get 408 and never hold a slot.")] = 10.0,
    trust_remote_code: Annotated[bool, typer.Option(
        "--trust-remote-code", help="Allow a served run whose recipe sets model.trust_remote_code: true "
        "(runs code from the model's repository).")] = False,
    rag: RagOption = None,
    rag_k: RagKOption = 4,
    glossary: GlossaryOption = None,
) -> None:
    """Serve an OpenAI-compatible API (/v1/chat/completions, /v1/models, /v1/feedback, /metrics) and a web
    playground at /."""
    _quiet_libraries()
    from seektune.serve.app import ServeSettings
    from seektune.serve.app import serve as serve_app

    adapters = {}
    for item in adapter or []:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            _fail(f"--adapter {item!r} is not name=RUN_DIR")
        adapters[name] = Path(path)
    settings = ServeSettings(target=target, adapters=adapters, host=host, port=port, api_key=api_key,
                             max_batch=max_batch, max_concurrency=max_concurrency, max_tokens_cap=max_tokens_cap,
                             cache_size=cache_size, feedback_db=feedback_db, engine=engine,
                             allowed_run_dirs=allowed_run_dir or None, allowed_hosts=allowed_host or None,
                             body_timeout_s=body_timeout, trust_remote_code=trust_remote_code,
                             rag_index=rag, rag_k=rag_k, glossary=glossary)
    if engine not in ("hf", "vllm"):
        _fail(f"--engine {engine!r}: choose hf or vllm")
    try:
        _guard(serve_app, settings)
    except typer.Exit:  # click's Exit is a RuntimeError too: an error _guard already reported
        raise
    except RuntimeError as exc:  # e.g. --engine vllm without CUDA or vllm
        _fail(str(exc))


@app.command()
def review(
    run: Annotated[Path, typer.Argument(help="A run directory `seektune synth` wrote, or its review .sqlite store.")],
    host: Annotated[str, typer.Option(help="Interface to listen on (0.0.0.0 for every interface).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8010,
    token: Annotated[str | None, typer.Option(envvar="SEEKTUNE_REVIEW_TOKEN", help="Require `Authorization: "
                     "Bearer TOKEN` on the API (the page asks for it).")] = None,
    open_browser: Annotated[bool, typer.Option("--open", help="Open the page in a web browser.")] = False,
) -> None:
    """A local web page to accept, edit or reject synthesised pairs; accepted and edited ones are training data."""
    logging.basicConfig(level=logging.INFO, format="seektune: %(message)s")
    from seektune.synth.review_app import serve_review

    _guard(lambda: serve_review(run, host=host, port=port, token=token, open_browser=open_browser))


feedback_app = typer.Typer(help="User feedback captured by `seektune serve`: turn it into training data.",
                           no_args_is_help=True)
app.add_typer(feedback_app, name="feedback")


@feedback_app.command("export")
def feedback_export(
    db: Annotated[Path, typer.Option(help="The SQLite file `seektune serve` wrote (e.g. runs/x/feedback.sqlite).")],
    to: Annotated[str, typer.Option(help="sft (corrections and up-rated answers) or dpo (preferred/rejected pairs).")],
    out: Annotated[Path | None, typer.Option(help="Output JSONL (default: feedback-<to>.jsonl beside the db).")] = None,
    include_completions: Annotated[bool, typer.Option(help="Also export /v1/completions raw continuations.")] = False,
    include_truncated: Annotated[bool, typer.Option(help="Also export answers cut off at max_tokens.")] = False,
) -> None:
    """Write feedback as rows for the next training run (`data.paths` of a recipe, or `seektune update`)."""
    from seektune.serve.feedback import export_feedback, export_summary

    target = out or db.with_name(f"feedback-{to}.jsonl")
    counts = _guard(lambda: export_feedback(db, to, target, include_completions=include_completions,
                                            include_truncated=include_truncated))
    console.print("\n".join(export_summary(counts, to, target)), highlight=False, soft_wrap=True)


@app.command()
def update(
    run: RunArg,
    overrides: OverridesArg = None,
    data: Annotated[list[Path] | None, typer.Option(
        "--data", help="New data (any format `prepare` reads; repeat for more files).")] = None,
    feedback: Annotated[Path | None, typer.Option(
        help="A feedback database from `seektune serve`: its corrections and up-rated answers are new data.")] = None,
    replay: Annotated[float | None, typer.Option(
        help="Old training rows mixed in per new row (default: the recipe's update.replay, 6); 0 turns replay off.",
        show_default=False)] = None,
    out: Annotated[Path | None, typer.Option(help="The updated run's directory (default: <run>-update-N).")] = None,
    skip_eval: Annotated[bool, typer.Option("--no-eval", help="Train only; skip the before/after evaluation.")
                         ] = False,
) -> None:
    """Continual learning: train a run further on new data, with replay, and report gain beside forgetting.

    The updated run is a new directory; the old split's fall is what was forgotten."""
    _quiet_libraries()
    from seektune import update as update_stage

    overrides = list(overrides or [])
    if replay is not None:
        overrides.append(f"update.replay={replay}")
    result = _guard(lambda: update_stage.run(run, data, feedback=feedback, out=out, overrides=overrides,
                                             evaluate_splits=not skip_eval))
    print_update(result)


@app.command()
def tune(
    recipe: RecipeArg,
    overrides: OverridesArg = None,
    trials: Annotated[int | None, typer.Option(help="Trials the study should hold (default: the recipe's "
                                                    "tune.trials, 8); running again continues the study.",
                                               show_default=False)] = None,
    out: Annotated[Path | None, typer.Option(help="Study directory (default: <output_dir>/tune).")] = None,
) -> None:
    """Hyper-parameter search with Optuna over the recipe's tune.space, pruning trials that fall behind.

    Writes trials.csv, tune.json and best.yaml (a recipe to run) into the study directory."""
    _quiet_libraries()
    logging.getLogger("optuna").setLevel(logging.WARNING)
    from seektune import tune as tune_stage

    def search():
        try:
            return tune_stage.run(recipe, overrides or [], trials, out)
        except RuntimeError as exc:  # every trial failed; trials.csv / tune.json say how
            if isinstance(exc, typer.Exit):
                raise
            _fail(str(exc), code=1)

    _guard(search)


def main() -> None:  # pragma: no cover - console entry for `python -m seektune`
    app(prog_name="seektune")
    sys.exit(0)
