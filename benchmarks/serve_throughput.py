"""`seektune serve` against the tutorial deployment and llama.cpp, 8 concurrent clients, on the embedded model.

    .venv/bin/python benchmarks/serve_throughput.py                  # 32 questions, 8 clients, 48 tokens
    .venv/bin/python benchmarks/serve_throughput.py --questions 16   # a quick look

The baseline is the usual tutorial server: a FastAPI ``POST /generate`` route calling a
transformers ``pipeline("text-generation")`` under a lock, one request at a time. seektune
serves ``POST /v1/chat/completions`` with dynamic batching. Each server runs in its own
subprocess (``OMP_NUM_THREADS`` threads, default 2), one after the other, never both at
once. The same clients (threads taking the next question from a shared list) send the same
customer-service questions with the same system prompt, greedy, ``max_tokens`` 48. Output
tokens are counted the same way for both: the answer text re-tokenised with the model's
tokenizer. Prints a table and, as its last line, a JSON object whose ``ratio`` is seektune
tokens/s ÷ baseline tokens/s (higher is better).

A third column is llama.cpp (``seektune.export.llamacpp``, its C API in process, no HTTP): the
same model written by the benchmark itself as a GGUF (``--gguf-quant``, default f32: the
weights seektune serves) into a temp dir, in its own subprocess with the same thread count
(``n_threads`` and ``OMP_NUM_THREADS``). The same system prompt and chat template rendering,
greedy, the same ``max_tokens``; the clients' questions are decoded batched, ``--clients``
sequences in one ``llama_batch`` (one seq id each) per step, in static groups: the next group
starts when the longest answer of the current one ends (llama.cpp's own server would refill a
finished slot at once). A question's latency is its group's time. The JSON adds
``llama_cpp_tok_s`` and ``ratio_vs_llama_cpp`` (seektune tokens/s ÷ llama.cpp tokens/s).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import queue
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
from pydantic import BaseModel

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "examples" / "customer-service" / "data" / "faq_en.jsonl"
SYSTEM = "You are the customer support assistant of Larkspur Goods."
MODEL = "smollm2-135m-instruct"


def questions(count: int) -> list[str]:
    seen: list[str] = []
    for line in DATA.read_text(encoding="utf-8").splitlines():
        question = json.loads(line)["question"]
        if question not in seen:
            seen.append(question)
    return seen[::max(1, len(seen) // count)][:count]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# ---------------------------------------------------------------- the two servers (subprocesses)


class GenerateRequest(BaseModel):
    messages: list[dict[str, str]]
    max_new_tokens: int = 48



def baseline_server(port: int) -> None:
    """The tutorial deployment: one pipeline, one request at a time."""
    import torch
    import uvicorn
    from fastapi import FastAPI
    from transformers import pipeline

    from seektune.models.load import resolve_model_path

    generator = pipeline("text-generation", model=resolve_model_path(MODEL), dtype=torch.float32)
    lock = threading.Lock()
    app = FastAPI()

    @app.post("/generate")
    def generate(body: GenerateRequest):
        with lock:
            out = generator(body.messages, max_new_tokens=body.max_new_tokens, do_sample=False,
                            return_full_text=False)
        return {"text": out[0]["generated_text"]}

    @app.get("/health")
    def health():
        return {"status": "ok"}

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


def seektune_server(port: int, feedback_db: str) -> None:
    from seektune.serve.app import ServeSettings, serve

    serve(ServeSettings(target=MODEL, port=port, feedback_db=Path(feedback_db), max_batch=8))


def llama_cpp_run(out: Path, count: int, clients: int, max_tokens: int, threads: int, quant: str) -> None:
    """The llama.cpp side, in its own process: answers and timings to ``out`` (JSON)."""
    from transformers import AutoTokenizer

    from seektune.export.gguf import write_gguf
    from seektune.export.llamacpp import LlamaCpp
    from seektune.models.load import resolve_model_path

    model_dir = resolve_model_path(MODEL)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    gguf_file = out.parent / f"{MODEL}-{quant}.gguf"
    write_gguf(Path(model_dir), gguf_file, quant, chat_template=tokenizer.chat_template)
    items = questions(count)
    texts = [tokenizer.apply_chat_template([{"role": "system", "content": SYSTEM}, {"role": "user", "content": q}],
                                           tokenize=False, add_generation_prompt=True) for q in items]
    with LlamaCpp(gguf_file, n_ctx=clients * (512 + max_tokens), n_threads=threads, n_seqs=clients) as llm:
        prompts = [llm.tokenize(text, add_special=False) for text in texts]
        llm.greedy(prompts[0], max_tokens)  # warm-up, not timed
        answers, latencies = [], []
        begin = time.perf_counter()
        for first in range(0, len(items), clients):
            started = time.perf_counter()
            answers += [ids for ids, _ in llm.greedy_many(prompts[first:first + clients], max_tokens)]
            latencies += [time.perf_counter() - started] * len(prompts[first:first + clients])
        wall = time.perf_counter() - begin
    texts = [tokenizer.decode(ids, skip_special_tokens=True) for ids in answers]  # as the servers return text
    out.write_text(json.dumps({"wall_s": wall, "answers": dict(zip(items, texts)), "latencies": latencies}))


def run_llama_cpp(tmp: str, args, count_tokens) -> dict:
    out = Path(tmp) / "llama-cpp.json"
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    done = subprocess.run([sys.executable, __file__, "--llama-cpp-run", str(out), "--questions", str(args.questions),
                           "--clients", str(args.clients), "--max-tokens", str(args.max_tokens),
                           "--threads", str(args.threads), "--gguf-quant", args.gguf_quant],
                          env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"the llama.cpp run failed: {done.stderr[-2000:]}")
    run = json.loads(out.read_text())
    tokens = sum(count_tokens(text) for text in run["answers"].values())
    ordered = sorted(run["latencies"])
    return {"wall_s": run["wall_s"], "tokens": tokens, "tokens_per_s": tokens / run["wall_s"],
            "requests": len(run["answers"]), "errors": 0, "p50_s": statistics.median(ordered),
            "p99_s": ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))], "answers": run["answers"]}


def start(role: str, port: int, threads: int, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    process = subprocess.Popen([sys.executable, __file__, f"--{role}-server", str(port), *extra], env=env, cwd=ROOT,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the {role} server exited: {process.stderr.read()[-2000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return process
        except httpx.HTTPError:
            time.sleep(0.5)
    process.kill()
    raise RuntimeError(f"the {role} server did not start in 300 s")


# ---------------------------------------------------------------- the clients


def ask_baseline(http: httpx.Client, port: int, question: str, max_tokens: int) -> str:
    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": question}]
    response = http.post(f"http://127.0.0.1:{port}/generate", json={"messages": messages, "max_new_tokens": max_tokens})
    response.raise_for_status()
    return response.json()["text"]


def ask_seektune(http: httpx.Client, port: int, question: str, max_tokens: int) -> str:
    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": question}]
    response = http.post(f"http://127.0.0.1:{port}/v1/chat/completions",
                         json={"model": MODEL, "messages": messages, "max_tokens": max_tokens, "temperature": 0})
    response.raise_for_status()
    return response.json()["choices"][0]["message"]["content"]


def load(ask, port: int, items: list[str], clients: int, max_tokens: int, count_tokens) -> dict:
    """``clients`` threads take the next question until none is left; throughput and latencies."""
    todo: queue.Queue[str] = queue.Queue()
    for item in items:
        todo.put(item)
    latencies: list[float] = []
    answers: dict[str, str] = {}
    errors: list[str] = []

    def client():
        with httpx.Client(timeout=600) as http:
            while True:
                try:
                    question = todo.get_nowait()
                except queue.Empty:
                    return
                begin = time.perf_counter()
                try:
                    answers[question] = ask(http, port, question, max_tokens)
                except Exception as err:  # noqa: BLE001 - a benchmark reports errors, it does not stop on them
                    errors.append(repr(err))
                latencies.append(time.perf_counter() - begin)

    with httpx.Client(timeout=600) as http:  # one warm-up request, not timed
        ask(http, port, items[0], max_tokens)
    begin = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - begin
    tokens = sum(count_tokens(text) for text in answers.values())
    ordered = sorted(latencies)
    return {"wall_s": wall, "tokens": tokens, "tokens_per_s": tokens / wall, "requests": len(items),
            "errors": len(errors), "p50_s": statistics.median(ordered),
            "p99_s": ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))], "answers": answers}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--questions", type=int, default=32)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=48)
    parser.add_argument("--threads", type=int, default=2, help="OMP_NUM_THREADS of each server (llama.cpp: n_threads)")
    parser.add_argument("--gguf-quant", default="f32", choices=["f32", "f16", "q8_0"], help="the llama.cpp side's GGUF")
    parser.add_argument("--baseline-server", type=int, metavar="PORT", help=argparse.SUPPRESS)
    parser.add_argument("--seektune-server", type=int, metavar="PORT", help=argparse.SUPPRESS)
    parser.add_argument("--llama-cpp-run", metavar="OUT", help=argparse.SUPPRESS)
    parser.add_argument("--feedback-db", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.baseline_server:
        return baseline_server(args.baseline_server)
    if args.seektune_server:
        return seektune_server(args.seektune_server, args.feedback_db)
    if args.llama_cpp_run:
        return llama_cpp_run(Path(args.llama_cpp_run), args.questions, args.clients, args.max_tokens, args.threads,
                             args.gguf_quant)

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoTokenizer

    from seektune.models.load import resolve_model_path

    tokenizer = AutoTokenizer.from_pretrained(resolve_model_path(MODEL))  # also converts the GGUF once, up front

    def count_tokens(text: str) -> int:
        return len(tokenizer(text, add_special_tokens=False)["input_ids"])

    items = questions(args.questions)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        sides = (("baseline", ask_baseline, ()), ("seektune", ask_seektune, ("--feedback-db", f"{tmp}/fb.sqlite")))
        for name, ask, extra in sides:
            port = free_port()
            process = start(name, port, args.threads, *extra)
            try:
                results[name] = load(ask, port, items, args.clients, args.max_tokens, count_tokens)
            finally:
                process.terminate()
                process.wait(timeout=30)
        results["llama.cpp"] = run_llama_cpp(tmp, args, count_tokens)

    def same_as_seektune(name: str) -> int:
        return sum(results["seektune"]["answers"].get(q, "").strip() == results[name]["answers"].get(q, "").strip()
                   for q in items)

    same, same_llama = same_as_seektune("baseline"), same_as_seektune("llama.cpp")
    print(f"{len(items)} questions, {args.clients} concurrent clients, max_tokens {args.max_tokens}, greedy, "
          f"{args.threads} threads per server; llama.cpp: {args.gguf_quant} GGUF, {args.clients} sequences "
          f"per batch; {platform.machine()}, {os.cpu_count()} CPUs")
    print(f"{'server':<10} {'wall s':>8} {'tokens':>7} {'tokens/s':>9} {'p50 s':>7} {'p99 s':>7} {'errors':>6}")
    for name, r in results.items():
        print(f"{name:<10} {r['wall_s']:>8.1f} {r['tokens']:>7} {r['tokens_per_s']:>9.1f} {r['p50_s']:>7.2f} "
              f"{r['p99_s']:>7.2f} {r['errors']:>6}")
    print(f"identical answers: seektune vs baseline {same}/{len(items)}, "
          f"seektune vs llama.cpp {same_llama}/{len(items)}")
    ratio = results["seektune"]["tokens_per_s"] / results["baseline"]["tokens_per_s"]
    ratio_llama = results["seektune"]["tokens_per_s"] / results["llama.cpp"]["tokens_per_s"]
    print(f"seektune / baseline {ratio:.2f}x, seektune / llama.cpp {ratio_llama:.2f}x")
    figures = {f"{name}_{key}": round(results[name][key], 2) for name in ("seektune", "baseline")
               for key in ("tokens_per_s", "p50_s", "p99_s")}
    print(json.dumps({
        "ratio": round(ratio, 2), **figures,
        "llama_cpp_tok_s": round(results["llama.cpp"]["tokens_per_s"], 2),
        "ratio_vs_llama_cpp": round(ratio_llama, 2),
        "llama_cpp_p50_s": round(results["llama.cpp"]["p50_s"], 2),
        "llama_cpp_p99_s": round(results["llama.cpp"]["p99_s"], 2),
        "errors": results["seektune"]["errors"] + results["baseline"]["errors"],
        "identical_answers": same, "identical_answers_llama_cpp": same_llama, "llama_cpp_gguf": args.gguf_quant,
        "questions": len(items), "clients": args.clients, "max_tokens": args.max_tokens,
    }))


if __name__ == "__main__":
    main()
