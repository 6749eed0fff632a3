"""``GET /health`` (liveness, open without the API key) and ``GET /metrics`` (Prometheus, key required)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from seektune.serve.state import ServeStateDep

router = APIRouter()


@router.get("/metrics", summary="Prometheus metrics")
async def prometheus(state: ServeStateDep):
    return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)


@router.get("/health", summary="Liveness (no API key needed)")
async def health(state: ServeStateDep):
    return {"status": "ok", "models": list(state.catalog.routes)}
