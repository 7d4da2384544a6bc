"""``GET /metrics``: what an operator's Prometheus sees after real jobs."""

from __future__ import annotations

from typing import Any

import httpx
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)
from prometheus_client.parser import text_string_to_metric_families

from tests.fixtures.api import RunningApi, StartApi
from tests.integration.jobs_support import finish, long_job, submit

Samples = list[tuple[str, dict[str, str], float]]


async def scrape(http: httpx.AsyncClient, **headers: str) -> Samples:
    response = await http.get("/metrics", headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    return [
        (s.name, dict(s.labels), s.value)
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
    ]


def value(samples: Samples, name: str, **labels: str) -> float:
    """The one sample called ``name`` whose labels include ``labels``."""
    found = [v for n, ls, v in samples if n == name and labels.items() <= ls.items()]
    assert len(found) == 1, (name, labels, [(n, ls) for n, ls, _ in samples if n == name])
    return found[0]


def engine_url(api: RunningApi) -> str:
    return api.services.backends.backends["embedded"].client.base_url


async def set_faults(url: str, **faults: Any) -> None:
    async with httpx.AsyncClient(base_url=url, timeout=5) as http:
        response = await http.post("/sakuga/faults", json=faults)
        assert response.status_code == 200, response.text


async def test_finished_jobs_show_in_states_counters_and_histograms(api: RunningApi) -> None:
    """A succeeded and a failed template job, and a raw workflow job, each counted once."""
    ok = await finish(api.http, (await submit(api.http, long_job(steps=2)))["id"])
    assert ok["status"] == "succeeded"
    graph = (await api.http.get(f"/api/v2/jobs/{ok['id']}/workflow")).json()["workflow"]
    raw = await finish(api.http, (await submit(api.http, {"workflow": graph}))["id"])
    assert raw["status"] == "succeeded"
    await set_faults(engine_url(api), fail_node="VAEDecode")
    bad = await finish(api.http, (await submit(api.http, long_job(steps=2)))["id"])
    assert bad["status"] == "failed"

    samples = await scrape(api.http)

    assert value(samples, "sakuga_jobs", state="succeeded", template="txt2img") == 1
    assert value(samples, "sakuga_jobs", state="failed", template="txt2img") == 1
    assert value(samples, "sakuga_jobs", state="queued", template="txt2img") == 0
    assert value(samples, "sakuga_jobs", state="succeeded", template="(workflow)") == 1
    assert value(samples, "sakuga_queue_depth") == 0
    finished = "sakuga_jobs_finished_total"
    assert value(samples, finished, status="succeeded", template="txt2img") == 1
    assert value(samples, finished, status="failed", template="txt2img") == 1
    assert value(samples, finished, status="succeeded", template="(workflow)") == 1
    for histogram in ("sakuga_job_queue_wait_seconds", "sakuga_job_execution_seconds"):
        # Both template jobs ran on the backend (the failure came at VAEDecode).
        assert value(samples, f"{histogram}_count", template="txt2img") == 2
        assert value(samples, f"{histogram}_bucket", template="txt2img", le="+Inf") == 2
        assert value(samples, f"{histogram}_bucket", template="txt2img", le="3600.0") == 2
        assert value(samples, f"{histogram}_sum", template="txt2img") > 0
    assert value(samples, "sakuga_backend_up", backend="embedded") == 1
    assert value(samples, "sakuga_backend_capacity", backend="embedded") == 2
    assert value(samples, "sakuga_backend_busy_slots", backend="embedded") == 0
    for outcome in ("delivered", "retry", "dead"):
        assert value(samples, "sakuga_webhook_deliveries_total", outcome=outcome) == 0


async def test_queue_depth_counts_jobs_waiting_for_a_worker(start_api: StartApi) -> None:
    api = await start_api(workers=False)
    for i in range(3):
        await submit(api.http, long_job(steps=2, prompt=f"waiting {i}"))
    samples = await scrape(api.http)
    assert value(samples, "sakuga_queue_depth") == 3
    assert value(samples, "sakuga_jobs", state="queued", template="txt2img") == 3
    assert value(samples, "sakuga_jobs", state="running", template="txt2img") == 0


async def test_retries_are_counted_by_reason(start_api: StartApi) -> None:
    """Each transient failure that sends a job back to the queue counts once."""
    api = await start_api(retry_attempts=3, retry_base_s=0.0, poison_strikes=10)
    await set_faults(engine_url(api), oom=True)
    final = await finish(api.http, (await submit(api.http, long_job(steps=2)))["id"])
    assert final["status"] == "failed"
    retried = len(final["attempts"]) - 1
    assert retried >= 1
    samples = await scrape(api.http)
    assert value(samples, "sakuga_retries_total", reason="out_of_memory") == retried


async def test_events_counted_by_other_parts_are_exposed(api: RunningApi) -> None:
    """The stable hooks the worker and webhook sender call: retry() and webhook_delivery()."""
    metrics = api.services.metrics
    metrics.retry("backend_unreachable")
    metrics.webhook_delivery("delivered")
    metrics.webhook_delivery("retry")
    metrics.webhook_delivery("retry")
    samples = await scrape(api.http)
    assert value(samples, "sakuga_retries_total", reason="backend_unreachable") == 1
    assert value(samples, "sakuga_webhook_deliveries_total", outcome="delivered") == 1
    assert value(samples, "sakuga_webhook_deliveries_total", outcome="retry") == 2
    assert value(samples, "sakuga_webhook_deliveries_total", outcome="dead") == 0


async def test_two_servers_in_one_process_keep_separate_series(start_api: StartApi) -> None:
    first = await start_api()
    second = await start_api(data_dir=first.settings.data_dir.parent / "second")
    first.services.metrics.retry("backend_lost")
    samples = await scrape(second.http)
    assert not [s for s in samples if s[0] == "sakuga_retries_total"]


async def test_metrics_need_the_admin_scope_when_auth_is_on(start_api: StartApi) -> None:
    api = await start_api(auth="on")
    keys = api.services.store.keys
    _, reader = await keys.create(None, "read,submit")
    _, admin = await keys.create(None, "admin")
    assert (await api.http.get("/metrics")).status_code == 401
    forbidden = await api.http.get("/metrics", headers={"Authorization": f"Bearer {reader}"})
    assert forbidden.status_code == 403
    assert forbidden.json()["error"]["code"] == "forbidden"
    samples = await scrape(api.http, Authorization=f"Bearer {admin}")
    assert value(samples, "sakuga_queue_depth") == 0


async def test_openmetrics_when_the_scraper_asks_for_it(api: RunningApi) -> None:
    accept = "application/openmetrics-text;version=1.0.0,text/plain;q=0.5"
    response = await api.http.get("/metrics", headers={"Accept": accept})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/openmetrics-text")
    assert response.text.endswith("# EOF\n")
    names = {f.name for f in openmetrics_families(response.text)}
    assert {"sakuga_jobs", "sakuga_queue_depth", "sakuga_retries"} <= names
