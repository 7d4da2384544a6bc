"""Job labels (``metadata``): the rules of Comfy API v2, checked before a job exists (pure)."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping

MAX_LABELS = 16
MAX_VALUE_BYTES = 256
MAX_FILTERS = 3
KEY_RE = re.compile(r"^[A-Za-z0-9_.-]{1,40}$")
KEY_RULE = "1-40 characters from A-Z a-z 0-9 _ . -"
VALUE_RULE = f"a string of at most {MAX_VALUE_BYTES} UTF-8 bytes without control characters"


def label_problem(labels: Mapping[str, object]) -> tuple[str, object, str] | None:
    """The first broken rule as (field, value, what is accepted), or None when all hold."""
    if len(labels) > MAX_LABELS:
        return "metadata", f"{len(labels)} labels", f"at most {MAX_LABELS} labels"
    for key, value in labels.items():
        if not KEY_RE.match(key):
            return f"metadata.{key}", key, f"label names of {KEY_RULE}"
        if not isinstance(value, str) or not _clean(value):
            return f"metadata.{key}", value, VALUE_RULE
    return None


def filter_problem(filters: Mapping[str, str]) -> tuple[str, object, str] | None:
    """The first broken rule of list filters ``metadata[k]=v``, or None."""
    if len(filters) > MAX_FILTERS:
        return "metadata", sorted(filters), f"at most {MAX_FILTERS} metadata filters"
    for key, value in filters.items():
        if not KEY_RE.match(key):
            return f"metadata[{key}]", key, f"metadata[<name>]=<value> with names of {KEY_RULE}"
        if not _clean(value):
            return f"metadata[{key}]", value, VALUE_RULE
    return None


def _clean(value: str) -> bool:
    # Control and bidi-override characters ("C*" categories) are refused.
    return len(value.encode("utf-8")) <= MAX_VALUE_BYTES and not any(
        unicodedata.category(ch).startswith("C") for ch in value
    )
