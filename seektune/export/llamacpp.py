"""llama.cpp itself, in process: open a GGUF, tokenize, score and answer greedily through its C API.

    from seektune.export.llamacpp import LlamaCpp

    with LlamaCpp("runs/customer-service/export/gguf/customer-service-f16.gguf", n_threads=2) as llm:
        ids = llm.tokenize("<|im_start|>user\\nHi<|im_end|>\\n<|im_start|>assistant\\n", add_special=False)
        answer, stopped = llm.greedy(ids, max_new_tokens=24)   # stopped: it ended on an eog token

The export stage uses it to check a GGUF in the runtime that will actually run it
(``export.json``'s ``parity.llama_cpp``); benchmarks/serve_throughput.py uses it as a column.

llama.cpp comes prebuilt from the PyPI wheel llama-cpp-cffi (its CPU library and the cffi
bindings of llama.h). Two things about that wheel shape this module:

- its metadata pins transformers<5 and huggingface-hub<0.29 for its own Hub ``Model`` class,
  which seektune does not use, and omits cffi, which its extension needs. So it is installed
  with ``--no-deps`` (the Makefile does), and the extension is loaded directly, without the
  package's ``__init__`` (which imports transformers and the Hub client);
- its CPU library was linked against GCC 14's libstdc++ and needs ``__cxa_call_terminate``,
  which older systems' libstdc++ (Debian 12: GCC 12) lack. When loading fails on that symbol,
  a one-function shared library defining it (it aborts, as ``std::terminate`` would) is built
  once with the system C compiler into ``$SEEKTUNE_CACHE/llama-cpp/`` and loaded first.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import importlib.machinery
import importlib.util
import os
import shutil
import subprocess
from collections import deque
from pathlib import Path
from typing import Self

import numpy as np

from seektune.models.load import cache_root

PACKAGE = "llama-cpp-cffi==0.4.42"
INSTALL_HINT = f"pip install 'seektune[llama]' && pip install --no-deps {PACKAGE}"
_SHIM_SOURCE = "#include <stdlib.h>\nvoid __cxa_call_terminate(void *exception) { (void)exception; abort(); }\n"
_log_lines: deque[str] = deque(maxlen=20)  # llama.cpp's last log lines, quoted when it refuses a file


class LlamaCppUnavailable(ImportError):
    """llama.cpp cannot be loaded here; the message says how to install it."""


@functools.cache
def _library():
    """(lib, ffi) of llama-cpp-cffi's CPU build, loaded once per process."""
    spec = importlib.util.find_spec("llama")  # locates the package without running its __init__
    folders = list(spec.submodule_search_locations or []) if spec else []
    found = sorted(Path(folders[0]).glob("_llama_cpp_cpu.*.so")) if folders else []
    if not found or importlib.util.find_spec("_cffi_backend") is None:
        raise LlamaCppUnavailable(f"llama.cpp is not installed: {INSTALL_HINT}")
    try:
        try:
            module = _load_extension(found[0])
        except ImportError as err:
            if "__cxa_call_terminate" not in str(err):
                raise
            ctypes.CDLL(str(_terminate_shim()), mode=os.RTLD_GLOBAL)
            module = _load_extension(found[0])
    except LlamaCppUnavailable:
        raise
    except ImportError as err:
        raise LlamaCppUnavailable(f"llama.cpp ({found[0]}) does not load: {err}") from err
    lib, ffi = module.lib, module.ffi

    @ffi.def_extern(name="llama_cpp_cffi_ggml_log_callback")
    def _log(level, text, user_data):  # keep the lines instead of printing them on stderr
        _log_lines.append(ffi.string(text).decode("utf-8", "replace").rstrip())

    lib.llama_log_set(lib.llama_cpp_cffi_ggml_log_callback, ffi.NULL)
    lib.llama_backend_init()
    return lib, ffi


def _load_extension(path: Path):
    name = "llama._llama_cpp_cpu"
    loader = importlib.machinery.ExtensionFileLoader(name, str(path))
    module = importlib.util.module_from_spec(importlib.util.spec_from_loader(name, loader, origin=str(path)))
    loader.exec_module(module)
    return module


def _terminate_shim() -> Path:
    """The shared library that supplies ``__cxa_call_terminate``, built on first use."""
    key = hashlib.sha256(_SHIM_SOURCE.encode()).hexdigest()[:12]
    out = cache_root() / "llama-cpp" / f"cxa-call-terminate-{key}.so"
    if out.is_file():
        return out
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if not compiler:
        raise LlamaCppUnavailable("llama.cpp's CPU library needs __cxa_call_terminate (GCC 14's libstdc++), which "
                                  "this system lacks; building the one-function stand-in needs a C compiler: "
                                  "install gcc (or set CC)")
    out.parent.mkdir(parents=True, exist_ok=True)
    source, tmp = out.with_suffix(".c"), out.with_name(f".{out.name}.{os.getpid()}.partial")
    source.write_text(_SHIM_SOURCE, encoding="utf-8")
    try:
        built = subprocess.run([compiler, "-shared", "-fPIC", "-O2", "-o", str(tmp), str(source)],
                               capture_output=True, text=True, check=False)
    except OSError as err:
        raise LlamaCppUnavailable(f"building {out.name} with {compiler} failed: {err}") from err
    if built.returncode != 0:
        raise LlamaCppUnavailable(f"building {out.name} with {compiler} failed: {built.stderr.strip()[-500:]}")
    os.replace(tmp, out)  # another process building it at the same time gets one whole file
    return out


class LlamaCpp:
    """One GGUF model and one context on llama.cpp's CPU backend.

    ``n_ctx`` is the KV cache size in tokens, shared by all sequences; ``n_seqs`` is how many
    sequences :meth:`greedy_many` may decode in one batch. The KV cache is llama.cpp's
    default f16, as llama.cpp and Ollama run a model.
    """

    def __init__(self, path: str | Path, *, n_ctx: int = 512, n_threads: int = 1, n_seqs: int = 1):
        self._lib, self._ffi = lib, ffi = _library()
        self._model = self._ctx = self._batch = None
        params = lib.llama_model_default_params()
        params.n_gpu_layers = 0
        self._model = lib.llama_model_load_from_file(str(path).encode(), params)
        if self._model == ffi.NULL:
            self._model = None
            raise ValueError(f"llama.cpp could not load {path}: {' | '.join(list(_log_lines)[-3:])}")
        context = lib.llama_context_default_params()
        context.n_ctx = context.n_batch = n_ctx
        context.n_seq_max, context.no_perf = n_seqs, True
        context.n_threads = context.n_threads_batch = n_threads
        self._ctx = lib.llama_init_from_model(self._model, context)
        if self._ctx == ffi.NULL:
            self._ctx = None
            self.close()
            raise ValueError(f"llama.cpp could not make a context for {path}: {' | '.join(list(_log_lines)[-3:])}")
        self._batch = lib.llama_batch_init(n_ctx, 0, n_seqs)
        self._vocab = lib.llama_model_get_vocab(self._model)
        self.n_ctx, self.n_seqs = n_ctx, n_seqs
        self.n_vocab = lib.llama_vocab_n_tokens(self._vocab)
        self.add_bos = bool(lib.llama_vocab_get_add_bos(self._vocab))
        self.eos_id = lib.llama_vocab_eos(self._vocab)
        self.eog_ids = frozenset(t for t in range(self.n_vocab) if lib.llama_vocab_is_eog(self._vocab, t))

    def close(self) -> None:
        """Free the batch, the context and the model (safe to call twice)."""
        if self._batch is not None:
            self._lib.llama_batch_free(self._batch)
        if self._ctx is not None:
            self._lib.llama_free(self._ctx)
        if self._model is not None:
            self._lib.llama_model_free(self._model)
        self._model = self._ctx = self._batch = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def tokenize(self, text: str, *, add_special: bool = True, parse_special: bool = True) -> list[int]:
        """llama.cpp's ids for ``text``: ``add_special`` adds BOS/EOS as the GGUF says (like
        transformers' ``add_special_tokens``); ``parse_special`` reads ``<|im_end|>`` as one token."""
        data = text.encode("utf-8")
        size = len(data) + 8
        while True:
            ids = self._ffi.new("int32_t[]", size)
            n = self._lib.llama_tokenize(self._vocab, data, len(data), ids, size, add_special, parse_special)
            if n >= 0:
                return list(ids[0:n])
            size = -n  # the buffer was too small: -n is the size it needs

    def logits(self, ids: list[int]) -> np.ndarray:
        """The next-token logits after each of ``ids`` (a fresh sequence), shape (len(ids), n_vocab)."""
        self._lib.llama_kv_self_clear(self._ctx)
        self._decode([(token, i, 0, True) for i, token in enumerate(ids)])
        return np.stack([self._row(i) for i in range(len(ids))])

    def greedy(self, ids: list[int], max_new_tokens: int) -> tuple[list[int], bool]:
        """The greedy answer to ``ids`` (up to ``max_new_tokens``, its eog token included if it
        ended on one) and whether it ended on an end-of-generation token."""
        return self.greedy_many([ids], max_new_tokens)[0]

    def greedy_many(self, prompts: list[list[int]], max_new_tokens: int) -> list[tuple[list[int], bool]]:
        """Greedy answers to several prompts, decoded together: one llama_batch per step holds
        the next token of every unfinished sequence (seq id = the prompt's index)."""
        if len(prompts) > self.n_seqs:
            raise ValueError(f"{len(prompts)} prompts but this context holds {self.n_seqs} sequences (n_seqs)")
        if sum(len(p) for p in prompts) + len(prompts) * max_new_tokens > self.n_ctx:
            raise ValueError(f"the prompts and answers do not fit n_ctx={self.n_ctx}")
        self._lib.llama_kv_self_clear(self._ctx)
        sampler = self._lib.llama_sampler_init_greedy()
        try:
            answers: list[list[int]] = [[] for _ in prompts]
            stopped = [False] * len(prompts)
            for seq, ids in enumerate(prompts):  # prefill one prompt per decode, logits for its last token
                self._decode([(token, i, seq, i == len(ids) - 1) for i, token in enumerate(ids)])
                answers[seq].append(self._lib.llama_sampler_sample(sampler, self._ctx, len(ids) - 1))
            while True:
                for seq, answer in enumerate(answers):
                    stopped[seq] = answer[-1] in self.eog_ids
                active = [s for s, a in enumerate(answers) if not stopped[s] and len(a) < max_new_tokens]
                if not active:
                    return list(zip(answers, stopped))
                self._decode([(answers[s][-1], len(prompts[s]) + len(answers[s]) - 1, s, True) for s in active])
                for row, seq in enumerate(active):
                    answers[seq].append(self._lib.llama_sampler_sample(sampler, self._ctx, row))
        finally:
            self._lib.llama_sampler_free(sampler)

    def _decode(self, tokens: list[tuple[int, int, int, bool]]) -> None:
        """One llama_decode of (token, position, sequence, wants logits) entries."""
        batch = self._batch
        batch.n_tokens = len(tokens)
        for i, (token, position, seq, wants_logits) in enumerate(tokens):
            batch.token[i], batch.pos[i], batch.n_seq_id[i], batch.logits[i] = token, position, 1, wants_logits
            batch.seq_id[i][0] = seq
        status = self._lib.llama_decode(self._ctx, batch)
        if status != 0:
            raise RuntimeError(f"llama_decode returned {status}: {' | '.join(list(_log_lines)[-3:])}")

    def _row(self, i: int) -> np.ndarray:
        pointer = self._lib.llama_get_logits_ith(self._ctx, i)
        return np.frombuffer(self._ffi.buffer(pointer, 4 * self.n_vocab), dtype=np.float32).copy()
