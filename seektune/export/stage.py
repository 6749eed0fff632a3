"""The export stage: turn a run into what other runtimes load, and prove it still answers alike.

    seektune export runs/customer-service --to merged          # HF safetensors, LoRA merged in
    seektune export runs/customer-service --to int8            # CPU dynamic int8 (torch)
    seektune export runs/customer-service --to onnx            # onnxruntime, with past key values
    seektune export runs/customer-service --to gguf --quant q8_0   # llama.cpp / Ollama

Everything lands in ``<run>/export/<target>/`` with an ``export.json`` holding the source
run, target, sizes and the parity figures measured against the trained model. Every
target but ``merged`` starts from the merged model, which is written (or reused) first.
A GGUF is also run by llama.cpp itself where it is installed (``parity.llama_cpp``: its
tokenizer, greedy answers and stop token, and the Modelfile's template; see llamacpp.py).
"""

from __future__ import annotations

import copy
import functools
import json
import logging
import shutil
import time
from pathlib import Path
from typing import Any

import torch

from seektune.runs import RunDir

log = logging.getLogger("seektune.export")

TARGETS = ("merged", "int8", "onnx", "gguf")
EXPORT_RECORD = "export.json"


class ExportExists(FileExistsError):
    pass


def _prompts(run: RunDir, n: int) -> list[list[dict[str, str]]]:
    """The first ``n`` test (else val, else train) questions as chat prompts, for parity checks."""
    from seektune.data.io import read_jsonl

    for split in ("test", "val", "train"):
        path = run.split(split)
        if path.is_file():
            rows = [r for r in read_jsonl(path) if "messages" in r][:n]
            if rows:
                return [[{"role": m["role"], "content": m["content"]} for m in r["messages"][:-1]] for r in rows]
    return [[{"role": "user", "content": q}] for q in ("Hello! Who are you?", "What can you help me with?")][:n]


def _batch(tokenizer, prompts):
    texts = [tokenizer.apply_chat_template(p, tokenize=False, add_generation_prompt=True) for p in prompts]
    tokenizer.padding_side = "left"
    return tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)


@torch.inference_mode()
def _logits(model, batch) -> torch.Tensor:
    return model(**batch).logits[batch["attention_mask"].bool()].float()


@torch.inference_mode()
def greedy(model, tokenizer, prompts, max_new_tokens: int = 24) -> list[list[int]]:
    batch = _batch(tokenizer, prompts)
    out = model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False,
                         pad_token_id=tokenizer.pad_token_id)
    width = batch["input_ids"].shape[1]
    eos = tokenizer.convert_tokens_to_ids(tokenizer.eos_token)
    result = []
    for row in out[:, width:].tolist():
        result.append(row[: row.index(eos) + 1] if eos in row else row)
    return result


def _prepare_dir(path: Path, force: bool) -> None:
    if path.exists() and any(path.iterdir()):
        if not force:
            raise ExportExists(f"{path} already exists; pass --force to overwrite it")
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    path.mkdir(parents=True, exist_ok=True)


def _dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _write_record(out: Path, record: dict[str, Any]) -> dict[str, Any]:
    (out / EXPORT_RECORD).write_text(json.dumps(record, indent=2, ensure_ascii=False), encoding="utf-8")
    return record


def ensure_merged(run_dir: str | Path | RunDir, *, dtype: str | None = None, force: bool = False,
                  verify: bool = True, parity_prompts: int = 8) -> tuple[Path, dict[str, Any]]:
    """``<run>/export/merged`` (written now, or reused when complete), and its export record."""
    from transformers import AutoModelForCausalLM

    from seektune.export.merge import export_merged

    run = RunDir(run_dir)
    out = run.export("merged")
    record_file = out / EXPORT_RECORD
    if record_file.is_file() and not force:
        record = json.loads(record_file.read_text())
        if record.get("dtype") == dtype:
            return out, record
    _prepare_dir(out, force=True if record_file.is_file() else force)
    started = time.perf_counter()
    log.info("merging %s into its base model -> %s", run, out)
    figures = export_merged(run, out, dtype)
    record: dict[str, Any] = {"source_run": str(run), "target": "merged", "dir": str(out), "dtype": dtype,
                              **figures,
                              "seconds": round(time.perf_counter() - started, 1), "dir_bytes": _dir_bytes(out)}
    if verify:
        log.info("checking the merged model's logits against base + adapter")
        _, loaded, tuned = run.load_tuned()
        merged = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)
        batch = _batch(loaded.tokenizer, _prompts(run, parity_prompts))
        diff = (_logits(merged, batch) - _logits(tuned.float(), batch)).abs().max().item()
        record["parity"] = {"against": "adapter model", "prompts": len(batch["input_ids"]),
                            "max_abs_logit_diff": diff}
    return out, _write_record(out, record)


def export_int8(run: RunDir, merged_dir: Path, force: bool, verify: bool) -> dict[str, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from seektune.data.io import read_jsonl
    from seektune.evaluate.stage import reference_perplexity
    from seektune.export import quantize

    out = run.export("int8")
    _prepare_dir(out, force)
    if torch.cuda.is_available():
        figures = quantize.bnb_quantize(merged_dir, out, 8)
        return _write_record(out, {"source_run": str(run), "target": "int8", "dir": str(out),
                                   "scheme": "bitsandbytes 8-bit",
                                   **figures})
    merged = AutoModelForCausalLM.from_pretrained(merged_dir, dtype=torch.float32).eval()
    quantized = quantize.quantize_int8(copy.deepcopy(merged))  # the float model stays for the parity figures
    log.info("quantising linear layers to int8 -> %s", out)
    figures = quantize.save_int8(quantized, merged_dir, out)
    record: dict[str, Any] = {"source_run": str(run), "target": "int8", "dir": str(out),
                              "scheme": "int8 weights (per output channel), float activations",
                              **figures, "merged_bytes": _weights_bytes(merged_dir)}
    record["size_ratio"] = record["bytes"] / record["merged_bytes"]
    if verify:
        log.info("measuring perplexity and decoding speed, float vs int8")
        reloaded = quantize.load_int8(out)
        tokenizer = AutoTokenizer.from_pretrained(merged_dir)
        rows = []
        test = run.split("test")
        if test.is_file():
            rows = [r for r in read_jsonl(test) if "messages" in r]
        if rows:
            base_ppl = reference_perplexity(merged, tokenizer, rows)
            int8_ppl = reference_perplexity(reloaded, tokenizer, rows)
            record["parity"] = {"split": "test", "rows": len(rows), "merged_perplexity": base_ppl,
                                "int8_perplexity": int8_ppl, "perplexity_change": int8_ppl / base_ppl - 1}
        prompt = _prompts(run, 1)[0]
        record["speed"] = {"merged_tokens_per_s": quantize.tokens_per_second(merged, tokenizer, prompt),
                           "int8_tokens_per_s": quantize.tokens_per_second(reloaded, tokenizer, prompt),
                           "threads": torch.get_num_threads()}
    return _write_record(out, record)


def _weights_bytes(model_dir: Path) -> int:
    return sum(p.stat().st_size for p in model_dir.glob("*.safetensors"))


def run(run_dir: str | Path, to: str, *, quant: str | None = None, dtype: str | None = None,
        force: bool = False, verify: bool = True) -> dict[str, Any]:
    """Export ``run_dir`` to ``to``; returns (and writes) the target's export.json."""
    source = RunDir(run_dir)
    if to not in TARGETS:
        raise ValueError(f"unknown export target {to!r}; choose one of {', '.join(TARGETS)}")
    if not source.is_run():
        raise FileNotFoundError(f"{source} is not a seektune run directory (no {source.resolved_recipe.name})")
    if quant and to != "gguf":
        raise ValueError(f"--quant applies to --to gguf only (got --to {to})")
    if to == "merged":
        target = source.export("merged")
        if (target / EXPORT_RECORD).is_file() and not force:
            raise ExportExists(f"{target} already exists; pass --force to overwrite it")
        return ensure_merged(source, dtype=dtype, force=force, verify=verify)[1]
    merged_dir, _ = ensure_merged(source, verify=verify)
    if to == "int8":
        return export_int8(source, merged_dir, force, verify)
    if to == "onnx":
        return export_onnx(source, merged_dir, force, verify)
    return export_gguf(source, merged_dir, quant or "f16", force, verify)


def export_onnx(run: RunDir, merged_dir: Path, force: bool, verify: bool) -> dict[str, Any]:
    """model.onnx with past key values, run by onnxruntime; parity on logits and greedy answers."""
    import numpy as np
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from seektune.export.onnx import OnnxCausalLM
    from seektune.export.onnx import export_onnx as write_onnx

    out = run.export("onnx")
    _prepare_dir(out, force)
    started = time.perf_counter()
    log.info("tracing the merged model to ONNX -> %s", out)
    figures = write_onnx(merged_dir, out)
    record: dict[str, Any] = {"source_run": str(run), "target": "onnx", "dir": str(out), **figures,
                              "seconds": round(time.perf_counter() - started, 1), "dir_bytes": _dir_bytes(out)}
    if verify:
        log.info("checking onnxruntime against PyTorch: logits and greedy answers")
        prompts = _prompts(run, 20)
        tokenizer = AutoTokenizer.from_pretrained(merged_dir)
        merged = AutoModelForCausalLM.from_pretrained(merged_dir, dtype=torch.float32)
        session = OnnxCausalLM(out)
        batch = _batch(tokenizer, prompts)
        ort = session.logits(batch["input_ids"].numpy(), batch["attention_mask"].numpy())
        mask = batch["attention_mask"].numpy().astype(bool)
        diff = float(np.abs(ort[mask] - _logits(merged, batch).numpy()).max())
        texts = [tokenizer.apply_chat_template(p, tokenize=False, add_generation_prompt=True) for p in prompts]
        theirs = session.generate(texts, max_new_tokens=24,
                                  eos_token_id=tokenizer.convert_tokens_to_ids(tokenizer.eos_token))
        ours = greedy(merged, tokenizer, prompts)
        record["parity"] = {"against": "merged model in PyTorch", "prompts": len(prompts),
                            "max_abs_logit_diff": diff,
                            "greedy_identical": sum(list(a) == list(b) for a, b in zip(ours, theirs))}
    return _write_record(out, record)


def export_gguf(run: RunDir, merged_dir: Path, quant: str, force: bool, verify: bool) -> dict[str, Any]:
    """A GGUF file with the tokenizer and chat template in its metadata, plus an Ollama Modelfile."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from seektune.export.gguf import default_system_prompt, write_gguf, write_modelfile

    out = run.export("gguf")
    gguf_file = out / f"{run.path.name}-{quant}.gguf"
    if gguf_file.exists() and not force:
        raise ExportExists(f"{gguf_file} already exists; pass --force to overwrite it")
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = AutoTokenizer.from_pretrained(merged_dir)
    started = time.perf_counter()
    log.info("writing %s", gguf_file)
    figures = write_gguf(merged_dir, gguf_file, quant, chat_template=tokenizer.chat_template, name=run.path.name)
    system = run.recipe().data.system_prompt or default_system_prompt(tokenizer)
    modelfile = write_modelfile(gguf_file, out / "Modelfile", chat_template=tokenizer.chat_template, system=system)
    record: dict[str, Any] = {"source_run": str(run), "target": "gguf", **figures, "file": str(gguf_file),
                              "modelfile": str(modelfile), "seconds": round(time.perf_counter() - started, 1),
                              "merged_bytes": _weights_bytes(merged_dir)}
    if verify:
        log.info("reloading the GGUF through transformers to check logits, answers and tokenizer")
        prompts = _prompts(run, 20)
        merged = AutoModelForCausalLM.from_pretrained(merged_dir, dtype=torch.float32)
        loaded = AutoModelForCausalLM.from_pretrained(out, gguf_file=gguf_file.name, dtype=torch.float32)
        loaded_tokenizer = AutoTokenizer.from_pretrained(out, gguf_file=gguf_file.name)
        texts = [tokenizer.apply_chat_template(p, tokenize=False, add_generation_prompt=True) for p in prompts]
        same_ids = sum(tokenizer(t, add_special_tokens=False)["input_ids"]
                       == loaded_tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts)
        batch = _batch(tokenizer, prompts)
        diff = (_logits(loaded, batch) - _logits(merged, batch)).abs().max().item()
        ours, theirs = greedy(merged, tokenizer, prompts), greedy(loaded, tokenizer, prompts)
        record["parity"] = {"against": "merged model, reloaded through transformers' GGUF loader",
                            "prompts": len(prompts), "max_abs_logit_diff": diff,
                            "greedy_identical": sum(a == b for a, b in zip(ours, theirs)),
                            "tokenizer_identical": same_ids,
                            "chat_template_stored": loaded_tokenizer.chat_template == tokenizer.chat_template}
        log.info("running the GGUF in llama.cpp: tokenizer, greedy answers, stop token, Modelfile template")
        record["parity"]["llama_cpp"], llama_answers = _llama_cpp_parity(gguf_file, tokenizer, prompts, ours, system)
        if quant == "f16":
            # f16 storage itself moves the logits (SmolLM2-135M: ~0.06). Against the merged model with
            # its matrices rounded to f16 in memory, the file must agree to float32 noise: that shows
            # the writer loses nothing beyond the storage type the user chose.
            with torch.no_grad():
                for parameter in merged.parameters():
                    if parameter.dim() == 2:
                        parameter.copy_(parameter.half().float())
            rounded = greedy(merged, tokenizer, prompts)
            record["parity"]["max_abs_logit_diff_vs_f16_rounded"] = (
                _logits(loaded, batch) - _logits(merged, batch)).abs().max().item()
            record["parity"]["greedy_identical_vs_f16_rounded"] = sum(a == b for a, b in zip(rounded, theirs))
            if llama_answers is not None:
                eog = record["parity"]["llama_cpp"]["eog_ids"]
                record["parity"]["llama_cpp"]["greedy_identical_vs_f16_rounded"] = sum(
                    _cut(a, eog) == b for a, b in zip(rounded, llama_answers))
    (out / f"{gguf_file.stem}.export.json").write_text(json.dumps(record, indent=2, ensure_ascii=False))
    return _write_record(out, record)  # export.json: the latest GGUF export (the Modelfile points at it)


def _cut(ids: list[int], stops) -> list[int]:
    """``ids`` up to and including the first of ``stops``."""
    return next((ids[: i + 1] for i, token in enumerate(ids) if token in stops), ids)


def _llama_cpp_parity(gguf_file: Path, tokenizer, prompts, ours: list[list[int]], system: str | None,
                      max_new_tokens: int = 24) -> tuple[dict[str, Any] | str, list[list[int]] | None]:
    """The GGUF run by llama.cpp against the merged model in PyTorch (``ours``: its greedy answers).

    Returns the figures and llama.cpp's answers, or a one-line reason and None where llama.cpp
    is not installed. Both sides answer up to ``max_new_tokens`` and stop at llama.cpp's
    end-of-generation tokens (PyTorch's answers, cut at EOS, are cut there too).
    """
    from importlib.metadata import version

    from seektune.export import llamacpp
    from seektune.export.gguf import OLLAMA_TEMPLATES, chat_format, render_ollama_template

    texts = [tokenizer.apply_chat_template(p, tokenize=False, add_generation_prompt=True) for p in prompts]
    expected = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
    try:
        llm = llamacpp.LlamaCpp(gguf_file, n_ctx=2 * max(map(len, expected)) + max_new_tokens,
                                n_threads=torch.get_num_threads())
    except llamacpp.LlamaCppUnavailable as err:
        _log_once(f"GGUF not checked in llama.cpp: {err}")
        return f"not checked: {err}", None
    with llm:
        ids = [llm.tokenize(t, add_special=False) for t in texts]
        answers = [llm.greedy(i, max_new_tokens) for i in ids]
        eog, add_bos = sorted(llm.eog_ids), llm.add_bos
    end_of_turn = tokenizer.convert_tokens_to_ids(tokenizer.eos_token)
    early = [a for a, _ in answers if len(a) < max_new_tokens]
    figures: dict[str, Any] = {
        "runtime": f"llama.cpp via llama-cpp-cffi {version('llama-cpp-cffi')}, CPU, f16 KV cache",
        "prompts": len(prompts), "tokenizer_identical": sum(a == b for a, b in zip(ids, expected)),
        "greedy_identical": sum(_cut(a, eog) == b for a, (b, _) in zip(ours, answers)),
        "answers_ended_early": len(early), "stops_at_end_of_turn": sum(a[-1] == end_of_turn for a in early),
        "end_of_turn": tokenizer.eos_token, "eog_ids": eog, "eog_includes_eos": end_of_turn in eog,
    }
    fmt = chat_format(tokenizer.chat_template)
    if fmt is None:
        figures["modelfile_template_identical"] = "no Go template for this chat format"
    else:
        # Ollama puts the Modelfile's SYSTEM before a chat that has no system message, and
        # llama.cpp adds BOS when the GGUF says so (the Jinja templates write it as text).
        bos = tokenizer.bos_token if add_bos else ""
        ollama = []
        for p in prompts:
            chat = p if not system or p[0]["role"] == "system" else [{"role": "system", "content": system}, *p]
            ollama.append(bos + render_ollama_template(OLLAMA_TEMPLATES[fmt], chat))
        figures["modelfile_template_identical"] = sum(a == b for a, b in zip(ollama, texts))
    return figures, [a for a, _ in answers]


@functools.cache
def _log_once(message: str) -> None:
    log.warning(message)

