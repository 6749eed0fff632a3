"""``GET /v1/models``: the model ids this server answers to (the only values ``model`` may take)."""

from __future__ import annotations

from fastapi import APIRouter

from seektune.serve.state import ServeStateDep

router = APIRouter()


@router.get("/v1/models", summary="The model ids this server answers to")
async def models(state: ServeStateDep):
    return {"object": "list", "data": [{"id": name, "object": "model", "created": state.created, "owned_by": "seektune"}
                                        for name in state.catalog.routes]}
