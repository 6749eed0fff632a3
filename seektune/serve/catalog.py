"""What a server offers and how it is loaded: model ids, adapters (checked before anything loads), engines.

    engine, catalog = load_hf_engine("runs/customer-service", {"v2": Path("runs/cs-v2")}, [Path.cwd()])
    catalog.routes      # {"customer-service": "default", "base": None, "v2": "v2"}

A target is a run directory (its adapter on the base, plus ``base``; or its whole trained
model) or any model the loader knows. Extra adapters come from other run directories, each
checked first: a safe name, safetensors weights only, and a directory that resolves (links
followed) under one of the allowed run directories. Requests then pick among the loaded
ids only; they never name a path.
"""

from __future__ import annotations

import importlib.util
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from seektune.runs import RunDir

if TYPE_CHECKING:  # the engines import torch: only the loaders below need them, and they import them late
    from seektune.serve.engine import HFEngine, VLLMEngine

MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
BASE = "base"  # the model id that always means "no adapter"


class AdapterNotAllowed(ValueError):
    """An adapter whose name or directory the server refuses to load."""


class RemoteCodeNotAllowed(ValueError):
    """A served run whose recipe turns ``model.trust_remote_code`` on, without ``--trust-remote-code``."""


def check_remote_code(run: RunDir, trust_remote_code: bool) -> None:
    """Refuse a run whose recipe would run the model repository's code, unless the server was told to allow it."""
    if run.recipe().model.trust_remote_code and not trust_remote_code:
        raise RemoteCodeNotAllowed(
            f"{run.path}'s recipe sets model.trust_remote_code: true, which runs code from the model's repository; "
            "pass --trust-remote-code to seektune serve to allow it")


def default_allowed_run_dirs(target: str) -> list[Path]:
    """Where --adapter runs may come from when --allowed-run-dir is not given: the served run's parent
    directory (its sibling runs), or the working directory when the target is a model rather than a run."""
    run = RunDir(target)
    return [Path(target).resolve().parent] if run.is_run() else [Path.cwd()]


@dataclass
class Catalog:
    """What the server offers: model id -> adapter key (None = no adapter) and its system prompt."""

    default: str
    routes: dict[str, str | None]
    system_prompts: dict[str, str | None]


def model_id_for(target: str) -> str:
    """A model id for a run dir or model name: its last path part, made safe."""
    name = re.sub(r"[^A-Za-z0-9._-]", "-", Path(target.rstrip("/\\")).name or "model").lstrip("._-")[:64]
    return name or "model"


def adapter_dir_of(run_dir: Path, allowed_run_dirs: list[Path]) -> Path:
    """The adapter directory inside ``run_dir``, checked: under an allowed directory, safetensors only."""
    try:
        resolved = run_dir.resolve(strict=True)
    except (OSError, RuntimeError) as err:
        raise AdapterNotAllowed(f"adapter run directory {run_dir} does not exist") from err
    run = RunDir(resolved)
    adapter = run.adapter if run.has_adapter() else resolved  # a run, or a bare PEFT adapter directory
    weights = adapter / "adapter_model.safetensors"
    if not (adapter / "adapter_config.json").is_file() or not weights.is_file():
        raise AdapterNotAllowed(
            f"{run_dir} holds no PEFT adapter in safetensors form (adapter_config.json + adapter_model.safetensors); "
            ".bin adapters are refused because loading them can run code")
    roots = [Path(d).resolve() for d in allowed_run_dirs]
    for path in (resolved, adapter.resolve(), weights.resolve()):  # symlinks resolved: no escape by link
        if not any(path.is_relative_to(root) for root in roots):
            raise AdapterNotAllowed(
                f"{run_dir} resolves to {path}, outside the allowed run directories "
                f"({', '.join(map(str, roots))}); pass --allowed-run-dir to widen them")
    return adapter


def check_adapters(adapters: dict[str, Path], allowed_run_dirs: list[Path], taken: set[str]) -> dict[str, Path]:
    """name -> adapter directory, every name and directory checked before anything is loaded."""
    checked = {}
    for name, run_dir in adapters.items():
        if not isinstance(name, str) or not MODEL_NAME.match(name):
            raise AdapterNotAllowed(f"adapter name {name!r} is not allowed: use letters, digits, '.', '_', '-' "
                                    "(up to 64, starting with a letter or digit)")
        if name in taken:
            raise AdapterNotAllowed(f"adapter name {name!r} is already used by the served model")
        checked[name] = adapter_dir_of(Path(run_dir), allowed_run_dirs)
    return checked


def _system_prompt(run_dir: Path) -> str | None:
    run = RunDir(run_dir)
    return run.recipe().data.system_prompt if run.is_run() else None


def load_hf_engine(target: str, adapters: dict[str, Path], allowed_run_dirs: list[Path], *,
                   max_batch: int = 8, batch_wait_ms: float = 10, on_step: Callable[[int], None] | None = None,
                   trust_remote_code: bool = False) -> tuple[HFEngine, Catalog]:
    """Load the target (a run dir: base + its adapter, or its full model; or any model) and the adapters.

    The base is loaded once; every adapter is attached to it with PEFT and chosen per batch.
    """
    from peft import PeftModel

    from seektune.serve.engine import HFEngine

    run = RunDir(target)
    default = model_id_for(target)
    checked = check_adapters(adapters, allowed_run_dirs, {default, BASE})
    if run.is_run():
        check_remote_code(run, trust_remote_code)
        recipe, loaded, model = run.load_tuned()
        if isinstance(model, PeftModel):
            routes = {default: "default", BASE: None}  # load_tuned names the run's adapter "default"
        else:  # a full fine-tune: the tuned weights are the model; the base is not kept in memory
            routes = {default: None}
        prompts = {default: recipe.data.system_prompt, BASE: recipe.data.system_prompt}
    else:
        from seektune.models.load import load_model

        loaded = load_model(target)
        model = loaded.model
        routes, prompts = {default: None, BASE: None}, {}
    for name, adapter_dir in checked.items():
        if isinstance(model, PeftModel):
            model.load_adapter(adapter_dir, adapter_name=name)
        else:
            model = PeftModel.from_pretrained(model, adapter_dir, adapter_name=name)
        routes[name] = name
        prompts[name] = _system_prompt(Path(adapters[name]))
    engine = HFEngine(model, loaded.tokenizer, max_batch=max_batch, batch_wait_ms=batch_wait_ms, on_step=on_step)
    return engine, Catalog(default, routes, {k: prompts.get(k) for k in routes})


def load_vllm_engine(target: str, adapters: dict[str, Path], allowed_run_dirs: list[Path], *,
                     max_batch: int = 8, trust_remote_code: bool = False) -> tuple[VLLMEngine, Catalog]:
    """vLLM's engine for a run dir (base + its LoRA adapter, or its full model) or a model, plus the adapters.
    vLLM runs its own batching, so the batch-size histogram stays empty."""
    import torch

    if importlib.util.find_spec("vllm") is None or not torch.cuda.is_available():
        raise RuntimeError("--engine vllm needs a CUDA GPU and the vllm package (pip install vllm); "
                           "this machine has " + ("no vllm" if importlib.util.find_spec("vllm") is None else "no CUDA")
                           + ". Use --engine hf (the default) instead.")
    from seektune.models.load import family_of, load_tokenizer, resolve_model_path
    from seektune.serve.engine import VLLMEngine

    run = RunDir(target)
    default = model_id_for(target)
    checked = check_adapters(adapters, allowed_run_dirs, {default, BASE})
    prompts: dict[str, str | None] = {}
    if run.is_run():
        check_remote_code(run, trust_remote_code)
        recipe = run.recipe()
        if run.has_adapter():
            base_name, routes = recipe.model.name, {default: default, BASE: None}
            checked = {default: run.adapter, **checked}
        else:
            base_name, routes = str(run.model), {default: None}
        chat_template = recipe.model.chat_template
        prompts = {default: recipe.data.system_prompt, BASE: recipe.data.system_prompt}
    else:
        base_name, routes, chat_template = target, {default: None, BASE: None}, None
    path = resolve_model_path(base_name)
    tokenizer = load_tokenizer(path, family_of(base_name, path), chat_template)
    for name, run_dir in adapters.items():
        routes[name], prompts[name] = name, _system_prompt(Path(run_dir))
    config = Path(path) / "config.json"
    context = json.loads(config.read_text()).get("max_position_embeddings") if config.is_file() else None
    engine = VLLMEngine(path, tokenizer, checked, max_batch=max_batch, context_length=context)
    return engine, Catalog(default, routes, {k: prompts.get(k) for k in routes})
