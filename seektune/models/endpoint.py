"""Call any OpenAI-compatible chat endpoint (vLLM, llama.cpp server, seektune serve, a hosted API).

Used wherever a remote model stands in for a local one: paraphrasing during data
augmentation, a served baseline in evaluation, a teacher in distillation.
"""

from __future__ import annotations

import os
from dataclasses import dataclass


class EndpointError(RuntimeError):
    pass


@dataclass
class ChatEndpoint:
    url: str  # base URL, e.g. http://127.0.0.1:8000/v1
    model: str = "default"
    api_key_env: str | None = "OPENAI_API_KEY"  # name of the environment variable holding the key
    timeout_s: float = 60.0

    def chat(self, messages: list[dict[str, str]], *, temperature: float = 0.0, max_tokens: int = 256) -> str:
        return self.complete(messages, temperature=temperature, max_tokens=max_tokens)[0]

    def complete(
        self,
        messages: list[dict[str, str]],
        *,
        temperature: float = 0.0,
        top_p: float = 1.0,
        max_tokens: int = 256,
        seed: int | None = None,
    ) -> tuple[str, str | None]:
        """``(content, reasoning)``; reasoning is DeepSeek's ``reasoning_content`` when the server sends it."""
        import requests

        headers = {"Content-Type": "application/json"}
        key = os.environ.get(self.api_key_env) if self.api_key_env else None
        if key:
            headers["Authorization"] = f"Bearer {key}"
        url = self.url.rstrip("/") + "/chat/completions"
        body = {"model": self.model, "messages": messages, "temperature": temperature, "max_tokens": max_tokens}
        if top_p < 1.0:
            body["top_p"] = top_p
        if seed is not None:
            body["seed"] = seed
        try:
            response = requests.post(url, json=body, headers=headers, timeout=self.timeout_s)
        except requests.RequestException as exc:
            raise EndpointError(f"cannot reach {url}: {exc}") from exc
        if response.status_code >= 400:
            raise EndpointError(f"{url} answered {response.status_code}: {response.text[:300]}")
        try:
            message = response.json()["choices"][0]["message"]
            return message["content"] or "", message.get("reasoning_content")
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            raise EndpointError(f"{url} did not answer in the OpenAI chat format: {response.text[:300]}") from exc
