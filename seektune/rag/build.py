"""Building and updating an index: for ``seektune index`` and for a recipe's ``rag:`` section.

    seektune index docs/handbook.md --out runs/handbook-index          # add or replace documents
    seektune index examples/customer-service/train_rag.yaml            # the recipe's rag: documents -> rag.index

A recipe's ``rag:`` section is the source of truth for its index: building from it adds new
documents, re-indexes changed ones, leaves unchanged ones alone and removes documents the section
no longer lists (a document that cannot be read keeps its old chunks and is reported).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from seektune.rag.index import Index, RagIndexError, SettingsDiffer


def _say(text: str) -> None:
    print(text)


def update_index(out: str | Path, documents: list[str | Path] | None = None, *, remove: list[str] | None = None,
                 encoder: str | None = None, chunk_tokens: int | None = None, overlap: int | None = None,
                 sync: bool = False, say: Callable[[str], None] = _say,
                 warn: Callable[[str], None] = _say) -> dict[str, Any]:
    """Add (or replace) ``documents`` in the index at ``out`` and drop the ``remove`` names; with ``sync``, also
    drop every document not among ``documents``. Only documents to add may create an index (a ``remove`` on a
    mistyped path is an error, not a new empty index). Returns the add report with ``removed``.

    Raises ValueError when nothing could be indexed or a name to remove is not in the index."""
    if not documents and not remove:
        raise ValueError("name documents to index or a document to remove")
    opened = Index.open_or_create(out, encoder=encoder, chunk_tokens=chunk_tokens, overlap=overlap) \
        if documents else Index.open(out)
    report: dict[str, Any] = {"added": [], "replaced": [], "unchanged": [], "failures": [], "removed": []}
    with opened as idx:
        if documents:
            report.update(idx.add(list(documents), progress=True))
            for failure in report["failures"]:
                warn(f"seektune: skipping {failure['document']}: {failure['reason']} ({failure['detail']})")
            if report["failures"] and not (report["added"] or report["replaced"] or report["unchanged"]):
                raise ValueError(f"none of the {len(report['failures'])} document(s) could be indexed (see above)")
        dropped = list(remove or [])
        if sync:
            listed = {name for key in ("added", "replaced", "unchanged") for name in report[key]}
            # unreadable or missing now: keep what it had (a missing path is reported by its path, not its name)
            listed |= {name for failure in report["failures"] for name in (failure["document"],
                                                                          Path(failure["document"]).name)}
            dropped += [d["name"] for d in idx.documents() if d["name"] not in listed]
        if dropped:
            report["removed"] = idx.remove(dropped)
            missing = sorted(set(remove or []) - set(report["removed"]))
            if missing:
                held = ", ".join(d["name"] for d in idx.documents()) or "none"
                raise ValueError(f"not in the index {out}: {', '.join(missing)} (it holds: {held})")
        say(f"index: {out} - added {len(report['added'])}, replaced {len(report['replaced'])}, unchanged "
            f"{len(report['unchanged'])}, removed {len(report['removed'])}, unreadable {len(report['failures'])}; "
            f"{len(idx.documents())} documents, {len(idx)} chunks")
    return report


def index_from_recipe(recipe: Any, say: Callable[[str], None] = _say, warn: Callable[[str], None] = _say) -> dict:
    """Bring the index of ``recipe.rag`` up to date with its ``documents`` (see the module docstring)."""
    spec = recipe.rag
    if spec is None:
        raise ValueError("the recipe has no rag: section (documents: [...], index: DIR) to build an index from")
    if not spec.documents:
        raise ValueError("rag.documents is empty: list the files or directories to index")
    try:
        return update_index(spec.index, spec.documents, encoder=spec.encoder, chunk_tokens=spec.chunk_tokens,
                            overlap=spec.overlap, sync=True, say=say, warn=warn)
    except SettingsDiffer as error:  # the recipe's settings are always given: say how to reconcile them
        raise RagIndexError(f"rag.index: {error.built}; set rag.encoder / chunk_tokens / overlap to those, or "
                            f"delete {spec.index} to rebuild it") from None
