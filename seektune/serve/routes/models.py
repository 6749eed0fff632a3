"""``GET /v1/models``: the model ids this server answers to (the only values ``model`` may take), and on a
server started with ``--rag INDEX`` a ``retrieval`` field: ``{"enabled": true, "k", "documents", "chunks"}``
(the playground shows its "use documents" switch when it is there)."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter

from seektune.serve.state import ServeStateDep

router = APIRouter()


@router.get("/v1/models", summary="The model ids this server answers to")
async def models(state: ServeStateDep):
    body = {"object": "list", "data": [{"id": name, "object": "model", "created": state.created, "owned_by": "seektune"}
                                        for name in state.catalog.routes]}
    if state.retriever is not None:  # behind the key: document counts are the operator's business
        body["retrieval"] = await asyncio.to_thread(state.retriever.info)
    return body
