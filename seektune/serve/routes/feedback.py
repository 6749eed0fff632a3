"""``POST /v1/feedback``: rate a completion this server returned (up / down), optionally with a better answer.

Rows go to the app's `FeedbackStore`; ``seektune feedback export`` turns them into training data.
"""

from __future__ import annotations

import asyncio

from fastapi import APIRouter

from seektune.serve.errors import APIError
from seektune.serve.feedback import ChoiceNotFound
from seektune.serve.schemas import FeedbackRequest
from seektune.serve.state import ServeStateDep

router = APIRouter()


@router.post("/v1/feedback", summary="Rate a completion (up/down), optionally with a better answer")
async def feedback(body: FeedbackRequest, state: ServeStateDep):
    try:
        await asyncio.to_thread(state.store.add_feedback, body.id, body.rating, body.correction, body.comment,
                                choice=body.choice)
    except ChoiceNotFound as err:
        raise APIError(404, f"Completion {body.id!r} has no choice {body.choice}.", code="choice_not_found",
                       param="choice") from err
    except KeyError as err:
        raise APIError(404, f"No completion with id {body.id!r}.", code="completion_not_found", param="id") from err
    except ValueError as err:
        raise APIError(400, str(err), code="invalid_value") from err
    return {"ok": True}
