"""API key scopes (pure): what each scope allows and how a scope list is parsed."""

from __future__ import annotations

from collections.abc import Iterable

# read: GET routes; submit: create and cancel jobs, upload assets; admin: backends, metrics.
SCOPES = ("read", "submit", "admin")


def parse_scopes(scopes: str | Iterable[str]) -> frozenset[str]:
    """``"submit,read"`` or an iterable as a scope set; raises ValueError naming the choices."""
    parts = scopes.split(",") if isinstance(scopes, str) else list(scopes)
    result = frozenset(part.strip() for part in parts if part.strip())
    unknown = sorted(result - set(SCOPES))
    if unknown:
        raise ValueError(f"unknown scope {', '.join(unknown)}; choose from {', '.join(SCOPES)}")
    if not result:
        raise ValueError(f"no scope given; choose from {', '.join(SCOPES)}")
    return result
