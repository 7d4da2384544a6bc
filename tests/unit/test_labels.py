"""Job labels follow Comfy API v2's rules; every broken rule names the label and the rule."""

from __future__ import annotations

import pytest

from sakuga.domain.labels import filter_problem, label_problem


@pytest.mark.parametrize(
    "labels, field",
    [
        ({"book": "a", "page": "12"}, None),
        ({f"k{i}": "v" for i in range(17)}, "metadata"),
        ({"bad key": "v"}, "metadata.bad key"),
        ({"x" * 41: "v"}, "metadata." + "x" * 41),
        ({"k": 5}, "metadata.k"),
        ({"k": "é" * 129}, "metadata.k"),
        ({"k": "line\nbreak"}, "metadata.k"),
        ({"k": "bidi\u202eoverride"}, "metadata.k"),
    ],
)
def test_label_rules(labels: dict[str, object], field: str | None) -> None:
    problem = label_problem(labels)
    assert (problem[0] if problem else None) == field


@pytest.mark.parametrize(
    "filters, bad",
    [
        ({"book": "a"}, False),
        ({"a": "1", "b": "2", "c": "3", "d": "4"}, True),
        ({"": "x"}, True),
        ({"k": "\x00"}, True),
    ],
)
def test_filter_rules(filters: dict[str, str], bad: bool) -> None:
    assert (filter_problem(filters) is not None) is bad
