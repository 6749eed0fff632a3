"""A retrieval index over documents: dense (sentence embeddings) + lexical (BM25), fused.

    seektune index examples/customer-service/docs/handbook.md --out runs/handbook-index
    seektune index more.pdf --out runs/handbook-index             # add / replace (changed files only)
    seektune index --remove old.pdf --out runs/handbook-index     # drop a document's chunks

Layout of an index directory:

``index.sqlite``
    the source of truth: every chunk (id ``handbook.md#c12``, document, position, page, heading path,
    text, sha256, embedding), the documents (file hash, so an unchanged file is skipped) and the
    settings it was built with. The lexical side is an SQLite **FTS5** table ranked by its built-in
    ``bm25()``: persistent, transactional, and updated row by row - adding or removing a document
    touches only that document's rows. Chinese text is cut into words by **jieba** before it goes
    into FTS5 (whose own tokenizer would keep a whole run of ideographs as one token).
``vectors.usearch``
    the dense side: a **usearch** HNSW index (cosine) keyed by chunk row id, with ``remove``/``add``
    per key, saved atomically. It is derived data: when it is missing or older than the database
    (``vectors.json`` holds the database generation it was saved at) it is rebuilt from the
    embeddings stored in SQLite, so a crash between the two writes loses nothing.

Why these and not a vector database: the index must sit in a run directory, work offline, update
one document at a time and be copied with ``cp``; SQLite (in the standard library) and usearch (one
small wheel, no server) do that. sqlite-vec would keep both sides in one file but needs
``enable_load_extension``, which many Python builds (Debian's included) leave out.

Queries are answered by both sides (``candidates`` each) and fused by weighted reciprocal rank fusion
(after Cormack et al. 2009; the weights and why are at ``RRF_K``), so a query whose words do not occur in
a chunk can still find it by meaning, and a code such as ``RTN`` or ``HELLOLARK`` is found by its
letters. The encoder defaults to multilingual-e5-small (English, Chinese and most other languages in
one space); the embedded MiniLM, any sentence-transformers directory or Hub id may be named instead
(see ``seektune.rag.embed``).
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import time
from contextlib import closing
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from seektune.rag.embed import (DEFAULT_ENCODER, ENCODER_LANGUAGES, Embedder, HashingEmbedder, encode_query,
                                 encoder_name, make_embedder)
from seektune.rag.lexical import lexical_tokens
from seektune.text import language_of

__all__ = ["DEFAULT_ENCODER", "Embedder", "HashingEmbedder", "Hit", "Index", "RRF_K", "RagIndexError",
           "SettingsDiffer", "lexical_tokens"]

INDEX_VERSION = 1
# Fusion: score = w / (RRF_K + dense rank) + 1 / (RRF_K + BM25 rank), w the embedder's fusion_weight: 2 for a
# trained sentence encoder (embed.LEARNED_WEIGHT), 1 for word hashing or an embedder that does not say. Chosen on the
# customer-service FAQ's train split (352 questions against the handbook; the test split was only measured after):
# with the plain 1/(60 + rank) of Cormack et al. a chunk both sides rank middling beat the one the encoder ranked
# first, and multilingual-e5-small's recall@4 was 0.905 en / 0.895 zh; with w = 2, RRF_K = 10 it is 0.942 / 0.930
# (dense alone 0.946 / 0.912, BM25 alone 0.786 / 0.860). A hashing embedder knows no more than BM25: on 20,000 of
# benchmarks/rag_index.py's generated chunks w = 2 put a query's source chunk in the top 4 for 0.43 of 100
# queries, w = 1 for 0.70 (w = 1 and RRF_K 60: 0.66).
RRF_K = 10
_DB = "index.sqlite"
_VECTORS = "vectors.usearch"
_VECTORS_META = "vectors.json"
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS documents (
    name TEXT PRIMARY KEY, path TEXT NOT NULL, sha256 TEXT NOT NULL, language TEXT NOT NULL,
    chunks INTEGER NOT NULL, indexed_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS chunks (
    id INTEGER PRIMARY KEY, chunk_id TEXT NOT NULL UNIQUE, document TEXT NOT NULL, position INTEGER NOT NULL,
    page INTEGER, heading TEXT, text TEXT NOT NULL, sha256 TEXT NOT NULL, embedding BLOB NOT NULL);
CREATE INDEX IF NOT EXISTS chunks_document ON chunks (document);
CREATE VIRTUAL TABLE IF NOT EXISTS lexical USING fts5 (tokens, tokenize = 'unicode61 remove_diacritics 2');
"""


class RagIndexError(ValueError):
    """An index that cannot be opened or built as asked (with what to do about it)."""


class SettingsDiffer(RagIndexError):
    """Settings asked of an existing index that differ from those it was built with (``built``: which, and how)."""

    def __init__(self, path, built: str):
        self.built = f"{path} was built with {built}"
        super().__init__(f"{self.built}; a setting of an existing index cannot change - leave it out, or build a "
                         "new index in another directory")


@dataclass
class Hit:
    """One retrieved chunk, with where it comes from and why it was chosen."""

    chunk_id: str
    document: str
    position: int
    page: int | None
    heading: str | None
    text: str
    score: float  # fused (reciprocal rank fusion)
    dense: float | None = None  # cosine similarity, when the dense side found it
    lexical: float | None = None  # BM25 (higher is better), when the lexical side found it

    def citation(self) -> dict[str, Any]:
        """What a response cites: no chunk text beyond a short preview."""
        data = asdict(self)
        data["preview"] = data.pop("text")[:200]
        return data


def _fts_query(tokens: Iterable[str]) -> str:
    """An FTS5 MATCH expression: any of the tokens, each quoted (so no token is read as an operator)."""
    quoted = ['"' + token.replace('"', '""') + '"' for token in dict.fromkeys(tokens)]
    return " OR ".join(quoted)


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class Index:
    """An index directory (see the module docstring). ``Index.open(path)`` for an existing one,
    ``Index.create(path, ...)`` for a new one (or ``open_or_create``)."""

    def __init__(self, path: Path, db: sqlite3.Connection, settings: dict[str, Any], embedder: Embedder | None):
        self.path = path
        self.db = db
        self.settings = settings
        self._embedder = embedder
        self._vectors = None

    # ------------------------------------------------------------ opening

    @classmethod
    def create(cls, path: str | Path, encoder: str = DEFAULT_ENCODER, chunk_tokens: int = 200, overlap: int = 32,
               embedder: Embedder | None = None) -> "Index":
        path = Path(path)
        if (path / _DB).exists():
            raise RagIndexError(f"{path} already holds an index; open it to add documents")
        if path.exists() and not path.is_dir():
            raise RagIndexError(f"{path} is a file, not an index directory")
        if not 0 <= overlap < chunk_tokens:
            raise RagIndexError(f"chunk overlap ({overlap}) must be from 0 to below chunk_tokens ({chunk_tokens})")
        embedder = embedder or make_embedder(encoder)
        path.mkdir(parents=True, exist_ok=True)
        db = cls._connect(path)
        settings = {"version": INDEX_VERSION, "encoder": embedder.name, "dim": embedder.dim,
                    "encoder_languages": ENCODER_LANGUAGES.get(embedder.name),
                    "chunk_tokens": chunk_tokens, "overlap": overlap, "generation": 0}
        with db:
            db.executemany("INSERT INTO meta VALUES (?, ?)", [(k, json.dumps(v)) for k, v in settings.items()])
        return cls(path, db, settings, embedder)

    @classmethod
    def open(cls, path: str | Path, embedder: Embedder | None = None) -> "Index":
        path = Path(path)
        if not (path / _DB).is_file():
            raise RagIndexError(f"no index at {path} (build one with: seektune index DOCS... --out {path})")
        db = cls._connect(path)
        try:
            settings = {k: json.loads(v) for k, v in db.execute("SELECT key, value FROM meta")}
        except sqlite3.DatabaseError as err:
            raise RagIndexError(f"{path / _DB} is not a seektune index ({err})") from None
        if settings.get("version") != INDEX_VERSION:
            raise RagIndexError(f"{path} was built by another index version ({settings.get('version')}, this "
                                f"seektune reads {INDEX_VERSION}); rebuild it with seektune index")
        if embedder is not None and (embedder.name, embedder.dim) != (settings["encoder"], settings["dim"]):
            raise RagIndexError(f"{path} was built with the encoder {settings['encoder']} ({settings['dim']} dims), "
                                f"not {embedder.name}")
        return cls(path, db, settings, embedder)

    @classmethod
    def open_or_create(cls, path: str | Path, encoder: str | None = None, chunk_tokens: int | None = None,
                       overlap: int | None = None, embedder: Embedder | None = None) -> "Index":
        """The index at ``path``, or a new one. Settings left None take the index's own (or, for a new index,
        the defaults); one given that differs from an existing index's is an error, not silently ignored."""
        asked = {"encoder": encoder, "chunk_tokens": chunk_tokens, "overlap": overlap}
        if not (Path(path) / _DB).is_file():  # create()'s own defaults for what was not asked
            return cls.create(path, embedder=embedder, **{k: v for k, v in asked.items() if v is not None})
        index = cls.open(path, embedder=embedder)
        asked["encoder"] = encoder and encoder_name(encoder)
        differ = [f"{key} {index.settings[key]} (asked: {value})" for key, value in asked.items()
                  if value is not None and value != index.settings[key]]
        if differ:
            index.close()
            raise SettingsDiffer(path, ", ".join(differ))
        return index

    @staticmethod
    def _connect(path: Path) -> sqlite3.Connection:
        db = sqlite3.connect(path / _DB, check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        db.executescript(_SCHEMA)
        return db

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> "Index":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    @property
    def embedder(self) -> Embedder:
        if self._embedder is None:
            self._embedder = make_embedder(self.settings["encoder"])
        return self._embedder

    # ------------------------------------------------------------ what it holds

    def __len__(self) -> int:
        return self.db.execute("SELECT COUNT(*) FROM chunks").fetchone()[0]

    def documents(self) -> list[dict[str, Any]]:
        rows = self.db.execute("SELECT name, path, sha256, language, chunks, indexed_at FROM documents ORDER BY name")
        return [dict(zip(("name", "path", "sha256", "language", "chunks", "indexed_at"), row)) for row in rows]

    def chunk_ids(self, document: str | None = None) -> list[str]:
        if document is None:
            rows = self.db.execute("SELECT chunk_id FROM chunks ORDER BY document, position")
        else:
            rows = self.db.execute("SELECT chunk_id FROM chunks WHERE document = ? ORDER BY position", (document,))
        return [row[0] for row in rows]

    def chunk(self, chunk_id: str) -> Hit | None:
        row = self.db.execute("SELECT chunk_id, document, position, page, heading, text FROM chunks "
                              "WHERE chunk_id = ?", (chunk_id,)).fetchone()
        return Hit(*row, score=0.0) if row else None

    # ------------------------------------------------------------ changing it

    def add(self, paths: list[str | Path], progress: bool = False) -> dict[str, list]:
        """Index the documents under ``paths``: new ones are added, changed ones replaced (their old chunks
        removed), unchanged ones skipped. Returns ``{"added", "replaced", "unchanged", "failures"}`` (a failure
        is ``{"document", "reason", "detail"}``: the other documents are still indexed)."""
        from tqdm.auto import tqdm

        from seektune.docs import chunk_document, read_documents

        known = {d["name"]: d["sha256"] for d in self.documents()}
        hashes: dict[str, str] = {}
        unchanged: list[str] = []

        def changed(file: Path, name: str) -> bool:  # an unchanged file is not even parsed
            hashes[name] = _sha256_file(file)
            if known.get(name) == hashes[name]:
                unchanged.append(name)
                return False
            return True

        documents, failures = read_documents(paths, wanted=changed)
        report: dict[str, list] = {"added": [], "replaced": [], "unchanged": unchanged, "failures": failures}
        tokenizer = getattr(self.embedder, "tokenizer", None) if documents else None
        for document in tqdm(documents, desc="index", unit="doc", disable=not progress or len(documents) < 2):
            sha = hashes[document.name]
            chunks = chunk_document(document, tokenizer, self.settings["chunk_tokens"], self.settings["overlap"])
            if not chunks:
                failures.append({"document": document.name, "reason": "empty", "detail": "no text to index"})
                continue
            vectors = self.embedder.encode([c.text for c in chunks])
            self._replace(document.name, str(document.path), sha, document.language, chunks, vectors, save=False)
            report["replaced" if document.name in known else "added"].append(document.name)
        if report["added"] or report["replaced"]:
            self._save_vectors()  # once: the file is rewritten whole (a crash before it: rebuilt on open)
        return report

    def add_chunks(self, document: str, texts: list[str], headings: list[str | None] | None = None,
                   vectors: np.ndarray | None = None) -> None:
        """Index ready-cut chunks as one document (ids ``<document>#c<k>``), replacing any of that name; for
        generated corpora and tests. ``vectors`` skips the embedder (they must be L2-normalised)."""
        from seektune.docs.chunk import Chunk

        headings = headings or [None] * len(texts)
        chunks = [Chunk(f"{document}#c{k + 1}", document, k, text, headings[k], None,
                        hashlib.sha256(text.encode("utf-8")).hexdigest()) for k, text in enumerate(texts)]
        if vectors is None:
            vectors = self.embedder.encode(texts)
        sha = hashlib.sha256("\n".join(texts).encode("utf-8")).hexdigest()
        self._replace(document, "", sha, language_of(" ".join(texts[:20])), chunks, vectors)

    def remove(self, names: list[str]) -> list[str]:
        """Drop these documents' chunks; returns the names that were in the index."""
        removed = []
        for name in names:
            if self.db.execute("SELECT 1 FROM documents WHERE name = ?", (name,)).fetchone():
                self._replace(name, "", "", "", [], np.zeros((0, self.settings["dim"]), dtype=np.float32))
                removed.append(name)
        return removed

    def _replace(self, name: str, path: str, sha: str, language: str, chunks: list, vectors: np.ndarray,
                 save: bool = True) -> None:
        """One transaction: the document's old rows out, its new ones in; then the vector index follows (and
        is saved, unless the caller saves once after several documents)."""
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if len(vectors) != len(chunks) or (len(chunks) and vectors.shape[1] != self.settings["dim"]):
            raise RagIndexError(f"{name}: {len(chunks)} chunks but embeddings of shape {vectors.shape}")
        vectors_index = self._vector_index()  # in step with the database before this change
        old_ids = [row[0] for row in self.db.execute("SELECT id FROM chunks WHERE document = ?", (name,))]
        new_ids: list[int] = []
        with self.db:
            if old_ids:
                marks = ",".join("?" * len(old_ids))
                self.db.execute(f"DELETE FROM lexical WHERE rowid IN ({marks})", old_ids)
                self.db.execute(f"DELETE FROM chunks WHERE id IN ({marks})", old_ids)
            self.db.execute("DELETE FROM documents WHERE name = ?", (name,))
            for chunk, vector in zip(chunks, vectors):
                cursor = self.db.execute(
                    "INSERT INTO chunks (chunk_id, document, position, page, heading, text, sha256, embedding) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (chunk.id, name, chunk.index, chunk.page, chunk.heading, chunk.text, chunk.sha256,
                     vector.tobytes()))
                new_ids.append(cursor.lastrowid)
                self.db.execute("INSERT INTO lexical (rowid, tokens) VALUES (?, ?)",  # the text starts with its
                                (cursor.lastrowid, " ".join(lexical_tokens(chunk.text))))  # heading path line
            if chunks:
                self.db.execute("INSERT INTO documents VALUES (?, ?, ?, ?, ?, ?)",
                                (name, path, sha, language, len(chunks), time.strftime("%Y-%m-%dT%H:%M:%S")))
            self.settings["generation"] += 1
            self.db.execute("UPDATE meta SET value = ? WHERE key = 'generation'",
                            (json.dumps(self.settings["generation"]),))
        for key in old_ids:
            vectors_index.remove(key)
        if new_ids:
            vectors_index.add(np.array(new_ids, dtype=np.uint64), vectors)
        if save:
            self._save_vectors()

    # ------------------------------------------------------------ the vector side

    def _vector_index(self):
        """The usearch index, loaded from disk when current, else rebuilt from the embeddings in SQLite."""
        if self._vectors is not None:
            return self._vectors
        from usearch.index import Index as VectorIndex

        vectors = VectorIndex(ndim=self.settings["dim"], metric="cos", dtype="f32")
        saved = self.path / _VECTORS
        try:
            generation = json.loads((self.path / _VECTORS_META).read_text())["generation"]
        except (OSError, ValueError, KeyError):
            generation = None
        if saved.is_file() and generation == self.settings["generation"]:
            vectors.load(str(saved))
        if len(vectors) != len(self):  # missing, stale, or a crash between the database and this file
            vectors = VectorIndex(ndim=self.settings["dim"], metric="cos", dtype="f32")
            rows = self.db.execute("SELECT id, embedding FROM chunks").fetchall()
            if rows:
                keys = np.array([row[0] for row in rows], dtype=np.uint64)
                matrix = np.frombuffer(b"".join(row[1] for row in rows), dtype=np.float32).reshape(len(rows), -1)
                vectors.add(keys, matrix)
            self._vectors = vectors
            self._save_vectors()
        self._vectors = vectors
        return vectors

    def _save_vectors(self) -> None:
        temporary = self.path / (_VECTORS + ".tmp")
        self._vectors.save(str(temporary))
        os.replace(temporary, self.path / _VECTORS)
        meta = self.path / (_VECTORS_META + ".tmp")
        meta.write_text(json.dumps({"generation": self.settings["generation"]}))
        os.replace(meta, self.path / _VECTORS_META)

    # ------------------------------------------------------------ searching

    def search(self, query: str, k: int = 4, candidates: int = 50) -> list[Hit]:
        """The ``k`` chunks that best answer ``query``: dense and lexical candidates fused by reciprocal rank."""
        tokens = lexical_tokens(query)
        if not tokens:
            return []  # no word to look for ("?!", blank)
        languages = self.settings.get("encoder_languages")
        dense = self._dense(query, candidates) if not languages or language_of(query) in languages else []
        lexical = self._lexical(tokens, candidates)
        fused: dict[int, float] = {}
        dense_weight = float(getattr(self.embedder, "fusion_weight", 1.0)) if dense else 1.0
        for weight, ranking in ((dense_weight, dense), (1.0, lexical)):
            for rank, (row_id, _) in enumerate(ranking):
                fused[row_id] = fused.get(row_id, 0.0) + weight / (RRF_K + rank + 1)
        best = sorted(fused, key=lambda row_id: (-fused[row_id], row_id))[:k]
        if not best:
            return []
        dense_scores, lexical_scores = dict(dense), dict(lexical)
        marks = ",".join("?" * len(best))
        rows = {row[0]: row[1:] for row in self.db.execute(
            f"SELECT id, chunk_id, document, position, page, heading, text FROM chunks WHERE id IN ({marks})", best)}
        return [Hit(*rows[row_id], score=fused[row_id], dense=dense_scores.get(row_id),
                    lexical=lexical_scores.get(row_id)) for row_id in best if row_id in rows]

    def _dense(self, query: str, candidates: int) -> list[tuple[int, float]]:
        vectors = self._vector_index()
        if len(vectors) == 0:
            return []
        found = vectors.search(encode_query(self.embedder, query), min(candidates, len(vectors)))
        return [(int(key), float(1.0 - distance)) for key, distance in zip(found.keys, found.distances)]

    def _lexical(self, tokens: list[str], candidates: int) -> list[tuple[int, float]]:
        with closing(self.db.cursor()) as cursor:
            rows = cursor.execute("SELECT rowid, bm25(lexical) FROM lexical WHERE lexical MATCH ? "
                                  "ORDER BY bm25(lexical) LIMIT ?", (_fts_query(tokens), candidates)).fetchall()
        return [(int(row_id), -float(score)) for row_id, score in rows]  # FTS5's bm25() is lower-is-better
