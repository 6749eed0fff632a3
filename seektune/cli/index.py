"""``seektune index``: build or update a retrieval index from documents or from a recipe's ``rag:`` section."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from seektune.cli.common import _guard, _load, _quiet_libraries, console, err


def index_command(
    documents: Annotated[list[Path] | None, typer.Argument(help="Files or directories of documents (.md .txt .pdf "
                                                         ".docx .html) to add (a changed file replaces its chunks); "
                                                         "or one recipe YAML whose rag: section lists them.",
                                                         show_default=False)] = None,
    out: Annotated[Path | None, typer.Option("--out", help="The index directory, created if missing (default: "
                                             "./index).", show_default=False)] = None,
    remove: Annotated[list[str] | None, typer.Option("--remove", help="Drop a document (by its name in the index, "
                                                     "e.g. handbook.md); repeatable.", show_default=False)] = None,
    encoder: Annotated[str | None, typer.Option(help="Embedding model of a new index: multilingual-e5-small (the "
                                                "default; English, Chinese and most languages), minilm-l6-v2 (English "
                                                "only), a sentence-transformers directory or a Hub id; `hashing` for "
                                                "none (words only, builds in seconds).",
                                                show_default=False)] = None,
    chunk_tokens: Annotated[int | None, typer.Option(help="Chunk size of a new index, in the encoder's tokens "
                                                     "(default 200).", show_default=False)] = None,
    overlap: Annotated[int | None, typer.Option(help="Tokens shared by consecutive chunks of a section in a new "
                                                "index (default 32).", show_default=False)] = None,
    query: Annotated[str | None, typer.Option(help="Search the index and print the best chunks (a quick check).",
                                              show_default=False)] = None,
    k: Annotated[int, typer.Option(help="Chunks shown for --query.")] = 4,
) -> None:
    """Build or update a retrieval index (dense multilingual-e5-small + BM25, fused) for `serve --rag` and `eval --rag`.

    Adding documents to an existing index re-indexes only files whose content changed. Given a recipe
    (seektune index train_rag.yaml), the index is its rag.index, holding exactly its rag.documents."""
    _quiet_libraries()
    from seektune.rag.build import index_from_recipe, update_index
    from seektune.rag.index import Index

    def say(text: str) -> None:
        console.print(text, soft_wrap=True, markup=False)

    def warn(text: str) -> None:
        err.print(text, soft_wrap=True, markup=False)

    def build():
        target = out or Path("index")
        if documents and len(documents) == 1 and documents[0].suffix in (".yaml", ".yml"):
            if out or remove or encoder or chunk_tokens or overlap is not None:
                raise ValueError("with a recipe, the index and its settings come from its rag: section; "
                                 "--out, --remove, --encoder, --chunk-tokens and --overlap are for documents")
            loaded = _load(documents[0], None)
            index_from_recipe(loaded, say=say, warn=warn)
            target = Path(loaded.rag.index)
        elif documents or remove:
            update_index(target, documents, remove=remove, encoder=encoder, chunk_tokens=chunk_tokens,
                         overlap=overlap, say=say, warn=warn)
        elif query is None:
            raise ValueError("name documents (or a recipe with a rag: section) to index, --remove NAME, or "
                             "--query TEXT")
        if query is not None:
            with Index.open(target) as idx:
                for rank, hit in enumerate(idx.search(query, k=k), start=1):
                    say(f"{rank}. {hit.chunk_id} (score {hit.score:.4f}) {hit.heading or ''}\n   "
                        f"{hit.text[:160].replace(chr(10), ' ')}")

    _guard(build)
