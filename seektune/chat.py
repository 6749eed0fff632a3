"""Talk to a run's tuned model (or any model) in the terminal.

    seektune chat runs/customer-service
    seektune chat smollm2-135m-instruct -m "What is your return window?"
"""

from __future__ import annotations

from pathlib import Path

import torch

from seektune.data.render import prompt_text
from seektune.recipe import RESOLVED_NAME


def load_for_chat(target: str):
    """A run directory -> base + adapter; anything else -> that model alone. Returns (model, tokenizer, system)."""
    path = Path(target)
    if (path / RESOLVED_NAME).is_file():
        from seektune.evaluate.stage import load_tuned

        recipe, loaded, model = load_tuned(path)
        return model, loaded.tokenizer, recipe.data.system_prompt
    from seektune.models.load import load_model

    loaded = load_model(target)
    return loaded.model, loaded.tokenizer, None


@torch.inference_mode()
def reply(model, tokenizer, messages: list[dict], max_new_tokens: int = 256, stream: bool = True) -> str:
    from transformers import TextStreamer

    text = prompt_text(tokenizer, messages)
    batch = tokenizer(text, return_tensors="pt", add_special_tokens=False).to(next(model.parameters()).device)
    streamer = TextStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True) if stream else None
    output = model.generate(
        **batch,
        max_new_tokens=max_new_tokens,
        do_sample=False,
        streamer=streamer,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.convert_tokens_to_ids(tokenizer.eos_token),
    )
    return tokenizer.decode(output[0, batch["input_ids"].shape[1]:], skip_special_tokens=True).strip()


def run(target: str, message: str | None = None, max_new_tokens: int = 256) -> None:
    model, tokenizer, system = load_for_chat(target)
    base: list[dict] = [{"role": "system", "content": system}] if system else []
    if message is not None:
        reply(model, tokenizer, base + [{"role": "user", "content": message}], max_new_tokens)
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
        answer = reply(model, tokenizer, history, max_new_tokens)
        history.append({"role": "assistant", "content": answer})
