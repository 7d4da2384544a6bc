"""Built-in workflow templates and their typed parameters."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends

from sakuga.api.auth import require_scope
from sakuga.api.jobs import ERRORS
from sakuga.domain.templates import builtin_templates, describe, get_template

router = APIRouter(
    prefix="/api/v2", tags=["templates"], dependencies=[Depends(require_scope("read"))]
)


@router.get("/templates")
async def list_templates() -> dict[str, Any]:
    """Every template with its parameters (type, default, bounds, description)."""
    return {"templates": [describe(t) for t in builtin_templates().values()]}


@router.get("/templates/{name}", responses=ERRORS)
async def get_one(name: str) -> dict[str, Any]:
    """One template's description, including its API-format graph."""
    template = get_template(name)
    return {**describe(template), "workflow": template.graph}
