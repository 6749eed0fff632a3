"""int8 export: int8 weights for CPU inference (torch), bitsandbytes 8/4-bit on CUDA.

    seektune export runs/customer-service --to int8

Every ``nn.Linear`` weight is stored as int8 with one fp32 scale per output channel
(symmetric, weight-only); activations stay in floating point and the matmul runs through
torch's int8-weight CPU kernel (``torch._weight_int8pack_mm``, the one gpt-fast and
torchao use). Weight-only is the choice because torch's dynamic int8 quantisation, which
also quantises activations per tensor, raised SmolLM2's perplexity on the
customer-service test split from 1.10 to 14: small LLMs have activation outliers that
8-bit activations cannot hold. Weights-only keeps it at 1.10 and still decodes faster,
since CPU decoding is bound by reading the weights.

The checkpoint is plain safetensors (``<name>.qweight`` int8, ``<name>.scales``) plus the
config and tokenizer; :func:`load_int8` rebuilds the model from it.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import torch

INT8_MANIFEST = "seektune_int8.json"


class Int8Linear(torch.nn.Module):
    """A linear layer with int8 weights and per-output-channel scales; activations stay float."""

    def __init__(self, qweight: torch.Tensor, scales: torch.Tensor, bias: torch.Tensor | None):
        super().__init__()
        self.in_features, self.out_features = qweight.shape[1], qweight.shape[0]
        self.register_buffer("qweight", qweight.contiguous())
        self.register_buffer("scales", scales.contiguous())
        self.bias = None if bias is None else torch.nn.Parameter(bias, requires_grad=False)

    @classmethod
    def from_linear(cls, linear: torch.nn.Linear) -> "Int8Linear":
        weight = linear.weight.detach().float()
        scales = (weight.abs().amax(dim=1) / 127).clamp(min=1e-12)
        qweight = torch.round(weight / scales[:, None]).clamp(-127, 127).to(torch.int8)
        bias = None if linear.bias is None else linear.bias.detach()
        return cls(qweight, scales, bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        flat = x.reshape(-1, shape[-1]).contiguous()
        y = torch._weight_int8pack_mm(flat, self.qweight, self.scales.to(flat.dtype))
        y = y.reshape(*shape[:-1], self.out_features)
        return y if self.bias is None else y + self.bias

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, int8 weights"


def _linear_children(model: torch.nn.Module):
    for parent_name, parent in model.named_modules():
        for name, child in parent.named_children():
            if isinstance(child, torch.nn.Linear):
                yield parent, name, f"{parent_name}.{name}" if parent_name else name


def quantize_int8(model: torch.nn.Module) -> torch.nn.Module:
    """Replace every ``nn.Linear`` with :class:`Int8Linear` in place (tied heads get their own int8 copy)."""
    for parent, name, _ in list(_linear_children(model)):
        setattr(parent, name, Int8Linear.from_linear(getattr(parent, name)))
    if hasattr(model, "config"):
        model.config.tie_word_embeddings = False
    return model


def save_int8(model: torch.nn.Module, merged_dir: Path, out_dir: Path) -> dict[str, Any]:
    """Write a :func:`quantize_int8` model as safetensors plus the config and tokenizer of ``merged_dir``."""
    import shutil

    from safetensors.torch import save_file

    out_dir.mkdir(parents=True, exist_ok=True)
    modules = sorted(name for name, module in model.named_modules() if isinstance(module, Int8Linear))
    tensors = {key: value.detach().contiguous() for key, value in model.state_dict().items()}
    save_file(tensors, str(out_dir / "model.safetensors"), metadata={"format": "seektune-int8"})
    (out_dir / INT8_MANIFEST).write_text(json.dumps(
        {"scheme": "int8 weights, symmetric per output channel; float activations", "modules": modules}, indent=2))
    for item in merged_dir.iterdir():
        if item.suffix in {".json", ".jinja", ".txt", ".model"} and not item.name.startswith("model.safetensors"):
            shutil.copy2(item, out_dir / item.name)
    return {"quantized_modules": len(modules), "bytes": (out_dir / "model.safetensors").stat().st_size}


def load_int8(out_dir: Path) -> torch.nn.Module:
    """The model written by :func:`save_int8`, ready for CPU inference."""
    from safetensors.torch import load_file
    from transformers import AutoConfig, AutoModelForCausalLM

    manifest = json.loads((out_dir / INT8_MANIFEST).read_text())
    config = AutoConfig.from_pretrained(out_dir)
    config.tie_word_embeddings = False
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    tensors = load_file(out_dir / "model.safetensors")
    wanted = set(manifest["modules"])
    for parent, name, full in list(_linear_children(model)):
        if full in wanted:
            setattr(parent, name, Int8Linear(tensors[f"{full}.qweight"], tensors[f"{full}.scales"],
                                             tensors.get(f"{full}.bias")))
    missing, unexpected = model.load_state_dict(tensors, strict=False)
    if missing or unexpected:
        raise ValueError(f"{out_dir}: the int8 checkpoint does not match the model "
                         f"(missing {missing[:5]}, unexpected {unexpected[:5]})")
    return model.eval()


def tokens_per_second(model, tokenizer, prompt_messages: list[dict[str, str]], new_tokens: int = 48) -> float:
    """Greedy decoding speed on one prompt, forcing ``new_tokens`` tokens (EOS ignored)."""
    ids = tokenizer.apply_chat_template(prompt_messages, add_generation_prompt=True, return_tensors="pt",
                                        return_dict=True)
    with torch.inference_mode():
        model.generate(**ids, max_new_tokens=4, do_sample=False)  # warm-up
        started = time.perf_counter()
        model.generate(**ids, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False)
        return new_tokens / (time.perf_counter() - started)


def bnb_quantize(merged_dir: Path, out_dir: Path, bits: int) -> dict[str, Any]:
    """CUDA only: load the merged model in 8- or 4-bit (NF4) with bitsandbytes and save it."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig

    if not torch.cuda.is_available():
        raise ValueError(f"{bits}-bit bitsandbytes export needs a CUDA GPU; on CPU use --to int8 (torch dynamic int8)")
    config = BitsAndBytesConfig(load_in_8bit=True) if bits == 8 else BitsAndBytesConfig(
        load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.bfloat16)
    model = AutoModelForCausalLM.from_pretrained(merged_dir, quantization_config=config, device_map={"": 0})
    model.save_pretrained(out_dir)
    AutoTokenizer.from_pretrained(merged_dir).save_pretrained(out_dir)
    return {"bytes": sum(p.stat().st_size for p in out_dir.glob("*.safetensors"))}
