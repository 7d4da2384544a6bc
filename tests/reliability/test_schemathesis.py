"""Schemathesis against sakuga's own OpenAPI: no generated request gets a 5xx.

CI runs ``SAKUGA_FUZZ_EXAMPLES`` (default 300) examples per operation; a longer run is
``SAKUGA_FUZZ_EXAMPLES=2000 pytest tests/reliability/test_schemathesis.py``.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

import hypothesis
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase

from tests.fixtures.api import StartApi

EXAMPLES = int(os.environ.get("SAKUGA_FUZZ_EXAMPLES", "300"))
# Streams never end for a live job; fuzzing them only probes ids, which other tests cover.
SKIP = {("GET", "/api/v2/jobs/{job_id}/events")}


def _fuzz(operation: Any, base_url: str, failures: list[str]) -> int:
    calls = 0

    @hypothesis.settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @hypothesis.given(case=operation.as_strategy())
    def check(case: Any) -> None:
        nonlocal calls
        calls += 1
        response = case.call(base_url=base_url, timeout=10)
        if response.status_code >= 500:
            failures.append(
                f"{case.method} {case.formatted_path} -> {response.status_code}: "
                f"{response.text[:200]}"
            )

    check()
    return calls


@pytest.mark.slow
@pytest.mark.timeout(900)
async def test_no_server_error_for_any_generated_request(start_api: StartApi) -> None:
    api = await start_api(workers=False, rate_limit="100000/minute")
    schema = schemathesis.openapi.from_dict((await api.http.get("/openapi.json")).json())
    failures: list[str] = []
    counted: dict[str, int] = {}
    for result in schema.get_all_operations():
        operation = result.ok()
        if (operation.method.upper(), operation.path) in SKIP:
            continue
        label = f"{operation.method.upper()} {operation.path}"
        counted[label] = await asyncio.to_thread(_fuzz, operation, api.url, failures)
    assert failures == [], "\n".join(failures[:20])
    assert len(counted) >= 10 and all(n > 0 for n in counted.values()), counted
