"""Spend training FLOPs only where they teach: padding-free batches and a label-only LM head.

    seektune train examples/customer-service/recipe.yaml                       # padding-free (the default)
    seektune train examples/customer-service/recipe.yaml train.batching=padded # one padded row per example

Two levers, each measured on its own by ``benchmarks/train_throughput.py``:

* **Padding-free batches.** trl's collator (``SFTConfig(padding_free=True)``) concatenates
  the rows of a batch into one sequence with per-row ``position_ids`` and the cumulative
  lengths ``cu_seq_lens_q``. transformers' sdpa and eager masks find the row boundaries in
  the ``position_ids`` (only when no KV cache is passed: trl's loss sets ``use_cache=False``)
  and build a block-diagonal causal mask, which is correct but scores every query against
  every key of the whole batch and throws most of it away: for 8 rows of 100 tokens that is
  8x the attention work of the rows alone. ``PACKED_SDPA`` runs sdpa
  once per row instead (flash-attention's varlen kernel does the same on a GPU, and is used
  there when installed). Batches stay what the sampler made them, so the data order, exact
  resume and the loss are those of padded batches.
* **A label-only LM head.** With answer-only loss most positions carry no label, and over a
  49k vocabulary the head is about a fifth of SmolLM2-135M's FLOPs per token. trl's fused
  head already scores only labelled positions on Triton devices; elsewhere it scores every
  position (static shapes for Neuron). On a CPU, :class:`LabelOnlyHead` (a ``compute_loss``
  override) gathers the hidden states at labelled positions and runs the head and the
  cross-entropy over them in chunks, so the ``[tokens, vocab]`` logits never exist.

Both give the loss and gradients of the plain path (``tests/e2e/test_packing.py``); the
loss normalisation (a per-token mean over the global batch, accumulation included) stays
trl's, shared by every batching.
"""

from __future__ import annotations

import functools
import importlib.util
import inspect
from typing import Any

import torch
import torch.nn.functional as F

from seektune.train import prefix

PACKED_SDPA = "seektune_packed_sdpa"
# methods that add virtual tokens (or a KV prefix) to every row: one packed row would get them once
ROW_PREFIX_METHODS = ("prefix", "prompt")
# rows of logits per chunk: 2**23 floats (32 MiB) whatever the vocabulary
CHUNK_ELEMENTS = 1 << 23


# ---------------------------------------------------------------- padding-free attention


def packed_sdpa_attention(module, query, key, value, attention_mask, dropout=0.0, scaling=None, is_causal=None,
                          cu_seq_lens_q=None, cu_seq_lens_k=None, **kwargs):
    """sdpa run once per packed row (``cu_seq_lens_q`` from trl's padding-free collator).

    Anything else (a padded batch, generation with a cache, sliding windows, soft-capping,
    attention sinks) goes to transformers' own sdpa with the mask transformers built, which
    is correct for packed rows too, only slower.
    """
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    plain_causal = (
        cu_seq_lens_q is not None
        and query.shape[0] == 1
        and query.shape[2] == key.shape[2]
        and (cu_seq_lens_k is None or torch.equal(cu_seq_lens_k, cu_seq_lens_q))
        and getattr(module, "is_causal", True) and is_causal is not False
        and getattr(module, "sliding_window", None) is None
        and kwargs.get("softcap") is None and kwargs.get("position_bias") is None
        and kwargs.get("s_aux") is None and kwargs.get("sinks") is None
    )
    if not plain_causal:
        if kwargs.get(prefix.PREFIX_KEY):  # its dropped rows' prefixes would be missing from transformers' mask
            raise RuntimeError(f"a shared-prefix batch reached {type(module).__name__}'s attention, which cannot "
                               "let rows see the first row's prefix (sliding window, soft-capping, sinks or a "
                               "cache); set train.shared_prefix=false")
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      is_causal=is_causal, **kwargs)
    bounds = cu_seq_lens_q.tolist()
    gqa = query.shape[1] != key.shape[1]
    if kwargs.get(prefix.PREFIX_KEY):  # a shared-prefix batch (prefix.py): later rows also see the first's prefix
        out = prefix.attend_with_prefix(query, key, value, bounds, kwargs[prefix.PREFIX_KEY], dropout, scaling, gqa)
        return out.transpose(1, 2).contiguous(), None
    rows = [
        F.scaled_dot_product_attention(query[:, :, start:end], key[:, :, start:end], value[:, :, start:end],
                                       dropout_p=dropout, scale=scaling, is_causal=True, enable_gqa=gqa)
        for start, end in zip(bounds[:-1], bounds[1:]) if end > start
    ]
    return torch.cat(rows, dim=2).transpose(1, 2).contiguous(), None


@functools.cache
def _register_packed_sdpa() -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(PACKED_SDPA, packed_sdpa_attention)
    AttentionMaskInterface.register(PACKED_SDPA, sdpa_mask)  # padded batches and generation need sdpa's mask


def padding_free_blocker(model, method_name: str) -> str | None:
    """Why padding-free batches would be wrong for this model and method, or None when they are right."""
    if method_name in ROW_PREFIX_METHODS:
        return f"method {method_name} adds virtual tokens to every row"
    if not getattr(model, "_supports_attention_backend", False):
        return f"{type(model).__name__} does not take its attention from transformers' AttentionInterface"
    implementation = model.config._attn_implementation or "sdpa"
    if implementation not in ("sdpa", "eager", PACKED_SDPA) and "flash" not in implementation:
        return f"attention implementation {implementation} is not known to keep packed rows apart"
    return None


def use_packed_attention(model) -> str:
    """Switch the model to attention that keeps packed rows apart without scoring across them.

    On a CUDA GPU with ``flash_attn`` installed that is flash-attention 2's varlen kernel
    (untested here: the project's machines have no GPU); otherwise ``PACKED_SDPA``.
    """
    half = model.dtype in (torch.bfloat16, torch.float16)  # flash-attention has no fp32 kernels
    if torch.cuda.is_available() and half and importlib.util.find_spec("flash_attn") is not None:
        implementation = "flash_attention_2"
    else:
        _register_packed_sdpa()
        implementation = PACKED_SDPA
    model.set_attn_implementation(implementation)
    return model.config._attn_implementation


# ---------------------------------------------------------------- label-only LM head


def chunks(rows: int, vocab: int):
    step = max(1, CHUNK_ELEMENTS // vocab)
    return ((start, min(start + step, rows)) for start in range(0, rows, step))


def head_logits(hidden, weight, bias):
    logits = (hidden @ weight.t()).float()
    return logits if bias is None else logits + bias.float()


class _LabelLogProbs(torch.autograd.Function):
    """log p(target) of ``hidden @ weight.T`` for N labelled positions, a chunk of rows at a time.

    The gradient with respect to ``hidden`` is computed in the forward pass, from the same
    logits chunk (``d log p / dh = (onehot - softmax) @ weight``), so the head costs two
    matmuls instead of the three a recomputing backward needs. A trainable head (full
    fine-tuning) recomputes its chunks in the backward pass for the weight gradient.
    """

    @staticmethod
    def forward(ctx, hidden, weight, bias, targets, want_grad: bool):
        rows, vocab = hidden.shape[0], weight.shape[0]
        log_probs = torch.empty(rows, dtype=torch.float32, device=hidden.device)
        entropy = torch.empty_like(log_probs)
        is_top1 = torch.empty(rows, dtype=torch.bool, device=hidden.device)
        d_hidden = torch.empty_like(hidden) if want_grad else None
        for start, end in chunks(rows, vocab):
            logits = head_logits(hidden[start:end], weight, bias)
            target = targets[start:end]
            log_z = torch.logsumexp(logits, dim=-1)
            log_probs[start:end] = logits.gather(1, target[:, None]).squeeze(1) - log_z
            is_top1[start:end] = logits.argmax(dim=-1) == target  # the first maximum, as trl counts it
            probs = torch.exp(logits - log_z[:, None])
            entropy[start:end] = log_z - (probs * logits).sum(dim=-1)
            if want_grad:
                probs[torch.arange(end - start, device=probs.device), target] -= 1  # softmax - onehot
                d_hidden[start:end] = -(probs.to(weight.dtype) @ weight)
        ctx.save_for_backward(hidden, weight, bias, targets, d_hidden)
        ctx.mark_non_differentiable(entropy, is_top1)  # logged, never trained on
        return log_probs, entropy, is_top1

    @staticmethod
    def backward(ctx, grad_log_probs, _grad_entropy, _grad_top1):
        hidden, weight, bias, targets, d_hidden = ctx.saved_tensors
        grad_hidden = grad_weight = grad_bias = None
        if grad_log_probs is None:
            return None, None, None, None, None
        if ctx.needs_input_grad[0]:
            grad_hidden = (grad_log_probs[:, None] * d_hidden.float()).to(hidden.dtype)
        if ctx.needs_input_grad[1] or (bias is not None and ctx.needs_input_grad[2]):
            grad_weight = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device)
            grad_bias = None if bias is None else torch.zeros(bias.shape, dtype=torch.float32, device=bias.device)
            for start, end in chunks(hidden.shape[0], weight.shape[0]):
                logits = head_logits(hidden[start:end], weight, bias)
                probs = torch.softmax(logits, dim=-1)
                probs[torch.arange(end - start, device=probs.device), targets[start:end]] -= 1
                d_logits = probs * -grad_log_probs[start:end, None]
                grad_weight += d_logits.t() @ hidden[start:end].float()
                if grad_bias is not None:
                    grad_bias += d_logits.sum(dim=0)
            grad_weight = grad_weight.to(weight.dtype) if ctx.needs_input_grad[1] else None
            grad_bias = grad_bias.to(bias.dtype) if grad_bias is not None and ctx.needs_input_grad[2] else None
        return grad_hidden, grad_weight, grad_bias, None, None


def label_log_probs(hidden: torch.Tensor, lm_head: torch.nn.Module, targets: torch.Tensor):
    """(log p(target), entropy, is_top1) for each row of ``hidden`` ([N, H]), never holding [N, vocab] logits."""
    want_grad = torch.is_grad_enabled() and hidden.requires_grad
    return _LabelLogProbs.apply(hidden, lm_head.weight, lm_head.bias, targets, want_grad)


SCALED_HEAD_KEYS = ("final_logit_softcapping", "logit_scale", "output_multiplier", "lm_head_multiplier",
                    "logits_scaling")


def causal_lm_of(model):
    """The transformers causal LM inside a peft / accelerate wrapper."""
    model = getattr(model, "module", model)  # DDP
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def last_hidden_state(model, inputs: dict[str, Any]) -> torch.Tensor:
    """The decoder's output for ``inputs`` with the LM head run on one position only.

    The call goes through every wrapper (DDP, peft, prompt tuning's virtual tokens, NEFTune
    hooks); a forward hook on the decoder (torch's public hook API) keeps its output, and
    transformers' ``logits_to_keep=1`` leaves the head a single position to score, so callers
    run the head on the positions they need themselves.
    """
    decoder = causal_lm_of(model).base_model
    kept: list[torch.Tensor] = []
    handle = decoder.register_forward_hook(lambda module, args, output: kept.append(output.last_hidden_state))
    try:
        model(**{k: v for k, v in inputs.items() if k not in ("labels", "shift_labels")},
              logits_to_keep=1, use_cache=False)
    finally:
        handle.remove()
    return kept[-1]


def keeps_logits(model) -> bool:
    """Whether the model's forward takes ``logits_to_keep`` (every transformers causal LM does)."""
    return _takes_logits_to_keep(type(causal_lm_of(model)))


@functools.cache
def _takes_logits_to_keep(model_class: type) -> bool:  # asked on every micro-batch: inspect once per class
    return "logits_to_keep" in inspect.signature(model_class.forward).parameters


class LabelOnlyHead:
    """SFTTrainer mixin: on a CPU, score labelled positions only (``label_log_probs``).

    trl's fused LM head scores only labelled positions on Triton devices; elsewhere it scores
    every position. Here ``compute_loss`` (the Trainer's public hook) takes the decoder's
    output, runs the head and the cross-entropy over the labelled positions in chunks, and
    returns trl's loss (a per-token mean over the global batch, accumulation included) with
    trl's metrics. Everything else goes to trl: other devices, MoE router losses, heads that
    scale or soft-cap their logits, label smoothing, custom losses, pre-shifted labels.
    Needs :class:`seektune.train.callbacks.LoggedMetrics` in the trainer.
    """

    def label_only(self, model, inputs) -> bool:
        lm = causal_lm_of(model)
        config = lm.config.get_text_config()
        return (lm.get_output_embeddings().weight.device.type == "cpu"
                and "shift_labels" not in inputs and inputs.get("labels") is not None
                and self.compute_loss_func is None and self.label_smoother is None
                and getattr(self.args, "loss_type", "nll") == "nll"
                and not getattr(self, "aux_loss_enabled", False) and not getattr(config, "output_router_logits", False)
                and self.accelerator.parallelism_config is None
                and not any(getattr(config, key, None) not in (None, 1.0) for key in SCALED_HEAD_KEYS)
                and keeps_logits(model))

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if not self.label_only(model, inputs):
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        from trl.trainer.utils import FusedCausalLMOutput

        lm = causal_lm_of(model)
        head = lm.get_output_embeddings()
        hidden = last_hidden_state(model, inputs)
        labels = inputs["labels"]
        offset = hidden.shape[1] - labels.shape[1]  # virtual tokens that prompt tuning puts first
        labels = labels[:, 1:].to(head.weight.device)
        mask = labels != -100
        log_probs, entropy, is_top1 = label_log_probs(hidden[:, offset:-1][mask], head, labels[mask])
        # masked_scatter keeps an all-unlabelled micro-batch connected to the graph (a zero loss, not an error)
        log_probs, entropy, is_top1 = (x.new_zeros(mask.shape).masked_scatter(mask, x)
                                       for x in (log_probs, entropy, is_top1))
        count = mask.sum() if num_items_in_batch is None else num_items_in_batch
        loss = -log_probs.sum() / torch.as_tensor(count).clamp(min=1)
        if self.args.average_tokens_across_devices and num_items_in_batch is not None:
            loss = loss * self.accelerator.num_processes  # as trl: DDP averages, the count is global
        self._record_token_metrics(inputs, mask, entropy, is_top1)
        outputs = FusedCausalLMOutput(loss=loss, log_probs=log_probs, entropy=entropy, is_top1=is_top1,
                                      label_mask=mask)
        return (loss, outputs) if return_outputs else loss

    def _record_token_metrics(self, inputs, mask, entropy, is_top1) -> None:
        """trl's figures for the same batch: entropy, token accuracy and tokens seen."""
        gather = self.accelerator.gather_for_metrics
        valid = gather(mask.sum()).sum()
        entropy_sum = gather(entropy.detach().sum()).sum()
        correct = gather(is_top1.sum()).sum()
        self.record("entropy", (entropy_sum / valid).item() if valid > 0 else 0.0)
        self.record("mean_token_accuracy", (correct / valid).item() if valid > 0 else 0.0)
        if self.model.training:
            if "attention_mask" in inputs:
                tokens = gather(inputs["attention_mask"].sum()).sum().item()
            else:  # padding-free: one row of position_ids; a shared prefix counts once per row, as in the data
                count = inputs["position_ids"].size(1)
                if inputs.get(prefix.PREFIX_KEY):
                    count += (inputs["cu_seq_lens_q"].numel() - 2) * inputs[prefix.PREFIX_KEY]
                tokens = gather(torch.tensor(count, device=inputs["position_ids"].device)).sum().item()
            self.tokens_seen += tokens
        self.record_total("num_tokens", self.tokens_seen)
