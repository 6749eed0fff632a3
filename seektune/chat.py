"""Talk to a run's tuned model (or any model) in the terminal.

    seektune chat runs/customer-service
    seektune chat smollm2-135m-instruct -m "What is your return window?"
    seektune chat runs/customer-service --backend onnx     # the exported model, through onnxruntime
    seektune chat runs/customer-service --rag runs/handbook-index --rag-k 4   # answers from documents, cited

With ``--rag`` each question is answered from the index's passages, put into that user turn as
``seektune serve --rag`` does (``seektune/serve/retrieval.py``); the sources are printed after the
answer. The conversation keeps the questions only, so earlier turns carry no old passages.
"""

from __future__ import annotations

from pathlib import Path

import torch

from seektune.data.render import prompt_ids
from seektune.runs import RunDir


def load_for_chat(target: str):
    """A run directory -> base + adapter; anything else -> that model alone. Returns (model, tokenizer, system)."""
    run = RunDir(target)
    if run.is_run():
        if run.recipe().task == "classification":
            raise ValueError(f"{target} is a classifier: it labels texts and cannot chat; `seektune eval {target}` "
                             "scores it and writes its report")
        recipe, loaded, model = run.load_tuned()
        return model, loaded.tokenizer, recipe.data.system_prompt
    from seektune.models.load import load_model

    loaded = load_model(target)
    return loaded.model, loaded.tokenizer, None


@torch.inference_mode()
def reply(model, tokenizer, messages: list[dict], max_new_tokens: int = 256, stream: bool = True,
          constraint=None, reasoning: bool | None = None) -> str:
    """Greedy, except for a reasoning (R1-style) model: DeepSeek's temperature 0.6 and top-p 0.95 (greedy
    decoding makes those repeat themselves). ``reasoning``: whether the template opens ``<think>`` (None: find
    out from the tokenizer; a chat loop passes what it found once)."""
    from transformers import TextStreamer

    from seektune.models.registry import R1_SAMPLING, opens_think

    if reasoning is None:
        reasoning = opens_think(tokenizer)

    ids = torch.tensor([prompt_ids(tokenizer, messages)], device=next(model.parameters()).device)
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    streamer = TextStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True) if stream else None
    output = model.generate(
        **batch,
        max_new_tokens=max_new_tokens,
        **({"do_sample": True, **R1_SAMPLING} if reasoning else {"do_sample": False}),
        streamer=streamer,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.convert_tokens_to_ids(tokenizer.eos_token),
        **({"logits_processor": [constraint.logits_processor(ids.shape[1])]} if constraint is not None else {}),
    )
    return tokenizer.decode(output[0, batch["input_ids"].shape[1]:], skip_special_tokens=True).strip()


BACKENDS = ("torch", "onnx", "int8")


def _exported(target: str, kind: str) -> Path:
    """The export directory to chat with: ``<run>/export/<kind>`` of a run, or the directory itself."""
    run = RunDir(target)
    path = run.export(kind) if run.is_run() else run.path
    marker = {"onnx": "onnx_config.json", "int8": "seektune_int8.json"}[kind]
    if not (path / marker).is_file():
        raise FileNotFoundError(f"{path} holds no {kind} export; run `seektune export {target} --to {kind}` first")
    return path


def _system_prompt(target: str) -> str | None:
    run = RunDir(target)
    return run.recipe().data.system_prompt if run.is_run() else None


def responder(target: str, backend: str = "torch", variants: list[str] | None = None):
    """``(respond, system_prompt)``; ``respond(messages, max_new_tokens)`` prints the answer as it
    streams and returns it. ``variants``: strings the answers can never contain (torch and int8)."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if variants and backend == "onnx":
        raise ValueError("--glossary is enforced while decoding with torch or int8, not through onnxruntime")
    if backend == "onnx":
        from seektune.export.onnx import chat_backend

        stream = chat_backend(_exported(target, "onnx"))

        def respond(messages, max_new_tokens):
            pieces = []
            for piece in stream(messages, max_new_tokens):
                print(piece, end="", flush=True)
                pieces.append(piece)
            print()
            return "".join(pieces).strip()

        return respond, _system_prompt(target)
    if backend == "int8":
        from transformers import AutoTokenizer

        from seektune.export.quantize import load_int8

        directory = _exported(target, "int8")
        model, tokenizer = load_int8(directory), AutoTokenizer.from_pretrained(directory)
        system = _system_prompt(target)
    else:
        model, tokenizer, system = load_for_chat(target)
    from seektune.models.registry import opens_think

    constraint = None
    if variants:
        from seektune.glossary import ForbiddenVariants

        constraint = ForbiddenVariants(tokenizer, variants)
    reasoning = opens_think(tokenizer)  # once per session, not per question
    return (lambda messages, max_new_tokens: reply(model, tokenizer, messages, max_new_tokens,
                                                   constraint=constraint, reasoning=reasoning)), system


def run(target: str, message: str | None = None, max_new_tokens: int = 256, backend: str = "torch",
        rag: str | Path | None = None, rag_k: int = 4, glossary: str | Path | None = None) -> None:
    variants = None
    if glossary is not None:
        from seektune.glossary import enforced_variants

        variants = enforced_variants(glossary)
    retriever = None
    if rag is not None:  # before the model loads: a wrong index path fails at once
        from seektune.serve.retrieval import Retriever

        retriever = Retriever.open(rag, rag_k)
    model_respond, system = responder(target, backend, variants)

    def respond(messages, max_new_tokens):
        if retriever is None:
            return model_respond(messages, max_new_tokens)
        from seektune.serve.retrieval import source_lines

        prompt, citations = retriever.ground(messages)
        answer = model_respond(prompt, max_new_tokens)
        print("sources:" if citations else "sources: none found")
        for line in source_lines(citations):
            print("  " + line)
        return answer

    base: list[dict] = [{"role": "system", "content": system}] if system else []
    if message is not None:
        respond(base + [{"role": "user", "content": message}], max_new_tokens)
        return
    history = list(base)
    print("seektune chat - /reset clears the conversation, /exit or Ctrl-D quits.")
    while True:
        try:
            question = input("\nyou> ").strip()
        except (EOFError, KeyboardInterrupt):
            print()
            return
        if not question:
            continue
        if question in {"/exit", "/quit"}:
            return
        if question == "/reset":
            history = list(base)
            continue
        history.append({"role": "user", "content": question})
        print("assistant> ", end="", flush=True)
        answer = respond(history, max_new_tokens)
        history.append({"role": "assistant", "content": answer})
