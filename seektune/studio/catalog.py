"""What the studio knows about runs and files: the runs under its runs directory with their status and key
figures, the recipes it saves, and the only paths it will read.

    catalog = Catalog(Path("runs"), data_roots=[Path("examples")])
    catalog.runs(jobs)                  # [{"name", "status", "objective", "method", "metrics", "age_s", ...}]
    catalog.run_dir("cs")               # runs/cs, or a StudioError for a name that is not a run here

A run's status comes from its files (``prepared`` -> ``trained`` -> ``evaluated``), overridden by its
newest job: a running job makes it ``preparing`` / ``training`` / ``evaluating`` (by what the files
say is next), a failed or cancelled one makes it ``failed`` / ``cancelled``.
"""

from __future__ import annotations

import json
import re
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from seektune.export.stage import EXPORT_RECORD
from seektune.recipe import RecipeError, load_recipe, rebase_paths
from seektune.runs import RunDir

__all__ = ["Catalog", "StudioError", "RUN_NAME"]

RUN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
STUDIO_DIR = ".studio"
KEY_METRICS = ("fact_accuracy", "rougeL", "accuracy", "macro_f1", "win_rate", "term_errors")
MAX_RECIPE_BYTES = 256 * 1024


class StudioError(ValueError):
    """A request the studio refuses: a bad name, a path outside what it may read, a recipe that is not valid.
    ``status`` is the HTTP status it answers with."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _is_under(path: Path, root: Path) -> bool:
    try:
        path.resolve().relative_to(root.resolve())
        return True
    except ValueError:
        return False


class Catalog:
    """The runs directory and the data paths the studio was given; everything it reads goes through here."""

    def __init__(self, runs_dir: Path, data_roots: list[Path] | None = None, workdir: Path | None = None):
        self.runs_dir = Path(runs_dir).resolve()
        self.workdir = (workdir or Path.cwd()).resolve()
        self.studio_dir = self.runs_dir / STUDIO_DIR
        self.uploads = self.studio_dir / "uploads"
        self.recipes_dir = self.studio_dir / "recipes"
        self.jobs_db = self.studio_dir / "jobs.sqlite"
        self.job_logs = self.studio_dir / "job-logs"  # <id>.log and <id>.rc of each job
        for directory in (self.uploads, self.recipes_dir):
            directory.mkdir(parents=True, exist_ok=True)
        self.data_roots = [Path(p).resolve() for p in data_roots or []]
        self.parsed: dict[Path, tuple[int, Any]] = {}  # path -> (mtime, parsed content), see _parsed

    # ---------------------------------------------------------------- names and paths

    def check_name(self, name: str) -> str:
        if not isinstance(name, str) or not RUN_NAME.match(name) or name == STUDIO_DIR:
            raise StudioError(f"run name {name!r} is not usable: letters, digits, '.', '_' and '-', starting with a "
                              "letter or digit, at most 64 characters")
        return name

    def run_dir(self, name: str, must_exist: bool = True) -> RunDir:
        run = RunDir(self.runs_dir / self.check_name(name))
        if must_exist and not run.path.is_dir() and not self.recipe_path(name).is_file():
            raise StudioError(f"no run {name!r} under {self.runs_dir}", 404)
        return run

    def readable(self, path: str | Path) -> Path:
        """A data path the studio may read: under the runs directory, its uploads, or a given data path."""
        resolved = (self.workdir / Path(path)).resolve()
        roots = [self.runs_dir, *self.data_roots]
        if not any(_is_under(resolved, root) for root in roots):
            given = ", ".join(str(r) for r in roots)
            raise StudioError(f"{path} is outside what this studio may read ({given}); upload the file or start "
                              "the studio with --data DIR")
        if not resolved.exists():
            raise StudioError(f"{path} does not exist", 404)
        return resolved

    # ---------------------------------------------------------------- recipes

    def examples(self) -> list[dict[str, str]]:
        """The recipes found under the given data paths (``--data examples`` lists the shipped examples)."""
        found = []
        for root in self.data_roots:
            candidates = [root] if root.is_file() else sorted(root.glob("*.yaml")) + sorted(root.glob("*/*.yaml"))
            for path in candidates:
                if path.suffix == ".yaml" and path.is_file():
                    try:
                        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
                    except (OSError, yaml.YAMLError):
                        continue
                    if isinstance(raw, dict) and ("model" in raw or "data" in raw):
                        found.append({"id": str(path.relative_to(root.parent)), "path": str(path)})
        return found

    def example_text(self, example_id: str) -> str:
        """An example recipe as YAML whose relative paths are made absolute (so it means the same files when
        the studio saves it elsewhere), its output_dir left for the run name to set."""
        match = next((e for e in self.examples() if e["id"] == example_id), None)
        if match is None:
            raise StudioError(f"no example recipe {example_id!r}", 404)
        path = Path(match["path"])
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        raw = rebase_paths(raw, path.parent)
        raw.pop("output_dir", None)
        return yaml.safe_dump(raw, sort_keys=False, allow_unicode=True)

    def parse_recipe(self, text: str, name: str) -> tuple[dict[str, Any], Any]:
        """The raw mapping (paths made absolute against the studio's working directory, output_dir set to the
        run) and the validated Recipe, or a StudioError with the CLI's message ("did you mean ...")."""
        self.check_name(name)
        if len(text.encode("utf-8")) > MAX_RECIPE_BYTES:
            raise StudioError(f"the recipe is larger than {MAX_RECIPE_BYTES // 1024} KB")
        try:
            raw = yaml.safe_load(text) if text.strip() else {}
        except yaml.YAMLError as exc:
            raise StudioError(f"recipe: not valid YAML: {exc}") from None
        if not isinstance(raw, dict):
            raise StudioError(f"recipe: a recipe must be a mapping of sections, got {type(raw).__name__}")
        raw = rebase_paths(raw, self.workdir)
        raw["output_dir"] = str(self.runs_dir / name)
        for data_path in self._data_paths(raw):
            self.readable(data_path)
        # a file of its own per validation: two tabs validating the same run name never read each other's draft
        with tempfile.NamedTemporaryFile("w", encoding="utf-8", dir=self.recipes_dir, prefix=f"{name}.",
                                         suffix=".draft.yaml", delete=False) as draft:
            draft.write(yaml.safe_dump(raw, sort_keys=False, allow_unicode=True))
        path = Path(draft.name)
        try:
            recipe = load_recipe(path)
        except RecipeError as exc:
            raise StudioError(str(exc).replace(str(path), "recipe")) from None
        finally:
            path.unlink(missing_ok=True)
        return raw, recipe

    @staticmethod
    def _data_paths(raw: dict[str, Any]) -> list[str]:
        data = raw.get("data") if isinstance(raw.get("data"), dict) else {}
        paths = data.get("paths") or []
        return [paths] if isinstance(paths, str) else [p for p in paths if isinstance(p, str)]

    def recipe_path(self, name: str) -> Path:
        return self.recipes_dir / f"{self.check_name(name)}.yaml"

    def save_recipe(self, name: str, raw: dict[str, Any]) -> Path:
        path = self.recipe_path(name)
        path.write_text(yaml.safe_dump(raw, sort_keys=False, allow_unicode=True), encoding="utf-8")
        return path

    # ---------------------------------------------------------------- runs

    def names(self) -> list[str]:
        """Runs: directories under the runs directory with a resolved recipe, or a studio recipe (a run that
        has not written anything yet)."""
        names = {p.name for p in self.runs_dir.iterdir() if p.is_dir() and RunDir(p).is_run()}
        names |= {p.stem for p in self.recipes_dir.glob("*.yaml") if not p.stem.endswith(".draft")}
        return sorted(n for n in names if RUN_NAME.match(n) and n != STUDIO_DIR)

    def summary(self, name: str, jobs: list) -> dict[str, Any]:
        """One run for the list: status, objective, method, key metrics (tuned and base), age."""
        run = RunDir(self.runs_dir / name)
        recipe = self._parsed(run.resolved_recipe, _read_yaml) or self._parsed(self.recipe_path(name), _read_yaml) or {}
        metrics = self._parsed(run.metrics, _read_json) or {}
        key = {m: {"tuned": (metrics.get("tuned") or {}).get(m), "base": (metrics.get("base") or {}).get(m)}
               for m in KEY_METRICS if isinstance((metrics.get("tuned") or {}).get(m), (int, float))}
        times = [p.stat().st_mtime for p in (run.path, run.metrics, run.train_summary) if p.exists()]
        newest = jobs[0] if jobs else None
        return {"name": name, "status": self.status(run, newest), "objective": recipe.get("objective", "sft"),
                "method": (recipe.get("method") or {}).get("name", "lora"),
                "model": (recipe.get("model") or {}).get("name") if isinstance(recipe.get("model"), dict)
                else recipe.get("model"),
                "metrics": key, "age_s": time.time() - max(times) if times else None,
                "job": newest.public() if newest else None,
                "has_report": run.report_html.is_file(), "has_review": run.review_store.is_file(),
                "has_feedback": run.feedback_db.is_file()}

    def _parsed(self, path: Path, read) -> Any:
        """``read(path)``, parsed again only when the file changed: the runs list is polled every 2 s and most
        runs' recipe and metrics never change."""
        try:
            stamp = path.stat().st_mtime_ns
        except OSError:
            return None
        cached = self.parsed.get(path)
        if cached is None or cached[0] != stamp:
            cached = self.parsed[path] = (stamp, read(path))
        return cached[1]

    @staticmethod
    def status(run: RunDir, job) -> str:
        if job is not None and job.status in ("queued", "running"):
            if job.status == "queued":
                return "queued"
            if job.stage in ("eval",) or (job.stage == "run" and run.is_trained()):
                return "evaluating"
            if job.stage in ("prepare", "synth", "index") or not run.is_prepared():
                return "preparing"
            if job.stage in ("run", "train", "update", "tune"):
                return "training"
            return job.stage + " running"
        if job is not None and job.status in ("failed", "cancelled"):
            return job.status
        if run.metrics.is_file():
            return "evaluated"
        if run.is_trained():
            return "trained"
        if run.is_prepared():
            return "prepared"
        return "new"

    def detail(self, name: str, jobs: list) -> dict[str, Any]:
        """Everything the run page shows but the report itself: summary, data card figures, checkpoints,
        exports, training progress, feedback and review counts."""
        run = self.run_dir(name)
        summary = self.summary(name, jobs)
        card = _read_json(run.card_json) or {}
        checkpoints = sorted(p.name for p in run.checkpoints.glob("checkpoint-*")) if run.checkpoints.is_dir() else []
        exports = {}
        for kind in ("merged", "int8", "onnx", "gguf"):
            record = _read_json(run.export(kind) / EXPORT_RECORD) if run.export(kind).is_dir() else None
            exports[kind] = {"done": run.export(kind).is_dir(), "parity": (record or {}).get("parity")}
        recipe_text = (run.resolved_recipe.read_text(encoding="utf-8") if run.resolved_recipe.is_file() else
                       self.recipe_path(name).read_text(encoding="utf-8") if self.recipe_path(name).is_file() else "")
        return {**summary, "card": {k: card.get(k) for k in ("rows", "splits", "languages", "tokens", "rejects")
                                    if k in card}, "has_card": run.card_html.is_file(),
                "data_summary": _read_json(run.data_summary), "checkpoints": checkpoints, "exports": exports,
                "progress": read_progress(run.progress), "recipe": recipe_text,
                "jobs": [j.public() for j in jobs], "feedback": _feedback_counts(run.feedback_db),
                "review": _review_counts(run.review_store)}


def _read_yaml(path: Path) -> dict[str, Any] | None:
    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return None
    return loaded if isinstance(loaded, dict) else None


def read_progress(path: Path, offset: int = 0) -> dict[str, Any]:
    """The progress file from ``offset`` bytes: its step entries' latest, its loss points, the new offset."""
    points, step, max_steps = [], None, None
    try:
        with path.open("rb") as handle:
            handle.seek(offset)
            data = handle.read()
    except OSError:
        return {"step": None, "max_steps": None, "points": [], "offset": offset}
    complete = data[:data.rfind(b"\n") + 1]  # a line being written is read next time
    for line in complete.decode("utf-8", "replace").splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if entry.get("max_steps") is not None:
            max_steps = entry["max_steps"]
        if entry.get("step") is not None:
            step = entry["step"]
        if entry.get("event") == "log":
            point = {k: entry[k] for k in ("step", "loss", "eval_loss", "learning_rate", "epoch") if k in entry}
            if "loss" in point or "eval_loss" in point:
                points.append(point)
    return {"step": step, "max_steps": max_steps, "points": points, "offset": offset + len(complete)}


def _feedback_counts(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    import sqlite3

    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
            tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
            return {table: db.execute(f'SELECT COUNT(*) FROM "{table}"').fetchone()[0] for table in tables
                    if not table.startswith("sqlite_")}
    except sqlite3.Error as exc:
        return {"error": str(exc)}


def _review_counts(path: Path) -> dict[str, int] | None:
    if not path.is_file():
        return None
    from seektune.data.review import ReviewError, ReviewStore

    try:
        return ReviewStore(path, create=False).counts()
    except ReviewError:
        return None
