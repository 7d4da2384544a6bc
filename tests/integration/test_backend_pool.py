"""The backend pool: health probes, breaker, least-loaded dispatch, drain, run-time registry."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import httpx

from sakuga.notify import Notifier
from sakuga.worker.backends import ENUM_REFRESH_MIN_S
from tests.fixtures.api import RunningApi, StartApi
from tests.fixtures.engine import EngineFactory, EngineProcess
from tests.integration.jobs_support import finish, long_job, submit, wait_status

# Probe often and heal fast, so health changes show within a second.
FAST = {"probe_s": 0.2, "probe_timeout_s": 0.3, "breaker_failures": 2, "breaker_reset_s": 0.5}
BACKENDS = "/api/v2/backends"


async def backends(api: RunningApi) -> dict[str, dict[str, Any]]:
    """The listing, keyed by backend name (its URL, or ``embedded``)."""
    response = await api.http.get(BACKENDS)
    assert response.status_code == 200, response.text
    return {b["name"]: b for b in response.json()["backends"]}


async def until(
    api: RunningApi,
    name: str,
    check: Callable[[dict[str, Any] | None], bool],
    *,
    timeout_s: float = 10.0,
    every_s: float = 0.1,
) -> dict[str, Any] | None:
    """Re-read the listing whenever the pool changes (at least every ``every_s``) until
    ``check`` holds for the backend ``name`` (None once it is gone)."""
    pool = api.services.backends
    changed = asyncio.Event()
    pool.on_change(changed.set)
    try:
        async with asyncio.timeout(timeout_s):
            while True:
                view = (await backends(api)).get(name)
                if check(view):
                    return view
                await Notifier.wait_event(changed, every_s)
                changed.clear()
    finally:
        pool.off_change(changed.set)


def job_on(checkpoint: str, steps: int = 2) -> dict[str, Any]:
    body = long_job(steps=steps)
    body["params"]["checkpoint"] = checkpoint
    return body


async def test_a_stopped_backend_turns_unhealthy_and_jobs_run_on_the_other(
    engine_process: Callable[..., EngineProcess], make_engine: EngineFactory, start_api: StartApi
) -> None:
    doomed = engine_process()
    async with make_engine() as spare:
        api = await start_api(backends=[doomed.url, spare.url], backend_capacity=1, **FAST)
        listed = await backends(api)
        assert listed[doomed.url]["healthy"] and listed[spare.url]["healthy"]

        doomed.stop()
        stopped = time.monotonic()
        down = await until(api, doomed.url, lambda v: v is not None and not v["healthy"])
        assert time.monotonic() - stopped < 10 * FAST["probe_s"]  # a few probe intervals
        assert down is not None and not down["reachable"] and down["last_error"]

        jobs = [await submit(api.http, long_job(steps=2, prompt=f"job {i}")) for i in range(3)]
        finals = [await finish(api.http, j["id"]) for j in jobs]
        assert [f["status"] for f in finals] == ["succeeded"] * 3
        assert {a["backend"] for f in finals for a in f["attempts"]} == {spare.url}
        # Probes went on failing: the breaker opened after breaker_failures of them.
        opened = await until(api, doomed.url, lambda v: v is not None and v["breaker"] == "open")
        assert opened is not None and opened["consecutive_failures"] >= 2


async def test_breaker_opens_after_failed_probes_and_half_opens_after_the_reset_time(
    make_engine: EngineFactory, start_api: StartApi
) -> None:
    async with make_engine() as engine:
        api = await start_api(backends=[engine.url], **FAST)
        engine.state.faults.update({"latency_s": 1.0})  # slower than probe_timeout_s
        opened = await until(api, engine.url, lambda v: v is not None and v["breaker"] == "open")
        assert opened is not None and not opened["healthy"]
        assert opened["consecutive_failures"] == 2
        assert "no answer within 0.3 s" in opened["last_error"]

        # Answering again, slowly: the trial probe takes 0.15 s, long enough to be seen.
        engine.state.faults.update({"latency_s": 0.15})
        seen: list[str] = []

        def closed(view: dict[str, Any] | None) -> bool:
            assert view is not None
            seen.append(view["breaker"])
            return bool(view["breaker"] == "closed")

        healed = await until(api, engine.url, closed, every_s=0.02)
        assert healed is not None and healed["healthy"] and healed["consecutive_failures"] == 0
        assert seen[-1] == "closed" and "half_open" in seen
        engine.state.faults.update({"latency_s": 0.0})
        final = await finish(api.http, (await submit(api.http, long_job(steps=2)))["id"])
        assert final["status"] == "succeeded"


async def test_jobs_that_lose_their_backend_count_toward_its_breaker(
    engine_process: Callable[..., EngineProcess], start_api: StartApi
) -> None:
    proc = engine_process("--step-s", "0.05")
    # Probes every 30 s: only the job's own failure can open the breaker here.
    api = await start_api(
        backends=[proc.url],
        probe_s=30.0,
        breaker_failures=1,
        breaker_reset_s=30.0,
        connect_timeout_s=0.5,
        silence_timeout_s=0.5,
        history_poll_s=0.1,
        retry_attempts=1,
    )
    job = await submit(api.http, long_job(steps=150))
    await wait_status(api.http, job["id"], "running")
    proc.stop(signal.SIGKILL)
    final = await finish(api.http, job["id"])
    assert final["error"]["code"] in {"backend_unreachable", "backend_lost"}
    view = await until(api, proc.url, lambda v: v is not None and v["breaker"] == "open")
    assert view is not None and not view["healthy"]


async def test_new_jobs_go_to_the_least_loaded_backend(
    make_engine: EngineFactory, start_api: StartApi
) -> None:
    async with make_engine(step_s=0.05) as one, make_engine(step_s=0.05) as two:
        api = await start_api(backends=[one.url, two.url], backend_capacity=2)
        first = await submit(api.http, long_job(steps=30, prompt="first"))
        await wait_status(api.http, first["id"], "running")
        second = await submit(api.http, long_job(steps=30, prompt="second"))
        await wait_status(api.http, second["id"], "running")
        a, b = [await finish(api.http, j["id"]) for j in (first, second)]
        assert a["status"] == b["status"] == "succeeded"
        assert {a["backend"], b["backend"]} == {one.url, two.url}


async def test_drain_lets_the_running_job_finish_and_sends_new_ones_elsewhere(
    make_engine: EngineFactory, start_api: StartApi
) -> None:
    async with make_engine(step_s=0.05) as one, make_engine(step_s=0.05) as two:
        api = await start_api(backends=[one.url, two.url], backend_capacity=2)
        running = await submit(api.http, long_job(steps=30, prompt="running"))
        await wait_status(api.http, running["id"], "running")
        where = (await api.http.get(f"/api/v2/jobs/{running['id']}")).json()["backend"]
        other = two.url if where == one.url else one.url
        ident = (await backends(api))[where]["id"]

        response = await api.http.post(f"{BACKENDS}/{ident}/drain")
        assert response.status_code == 200, response.text
        assert response.json()["draining"] is True and response.json()["busy"] == 1

        # Without the drain one of these three would land beside the running job.
        later = [await submit(api.http, long_job(steps=2, prompt=f"later {i}")) for i in range(3)]
        finals = [await finish(api.http, j["id"]) for j in later]
        assert all(f["status"] == "succeeded" and f["backend"] == other for f in finals)
        done = await finish(api.http, running["id"])
        assert done["status"] == "succeeded" and done["backend"] == where
        assert len(done["attempts"]) == 1


async def test_a_job_for_a_drained_backend_waits_until_it_resumes(
    make_engine: EngineFactory, start_api: StartApi
) -> None:
    async with make_engine() as engine:
        api = await start_api(backends=[engine.url])
        ident = (await backends(api))[engine.url]["id"]
        assert (await api.http.post(f"{BACKENDS}/{ident}/drain")).status_code == 200
        job = await submit(api.http, long_job(steps=2))
        # Two backstop polls (poll_s 0.5) pass and nothing happens to the job.
        assert not await api.services.notifier.wait(f"job:{job['id']}", 1.0)
        waiting = (await api.http.get(f"/api/v2/jobs/{job['id']}")).json()
        assert waiting["status"] == "queued" and waiting["attempts"] == []

        resumed = await api.http.post(f"{BACKENDS}/{ident}/resume")
        assert resumed.status_code == 200 and resumed.json()["draining"] is False
        assert (await finish(api.http, job["id"]))["status"] == "succeeded"


async def test_a_backend_registered_at_run_time_runs_what_only_it_can(
    make_engine: EngineFactory, start_api: StartApi
) -> None:
    async with make_engine() as base, make_engine(checkpoints=("special.safetensors",)) as new:
        api = await start_api(backends=[base.url])
        refused = await api.http.post("/api/v2/jobs", json=job_on("special.safetensors"))
        assert refused.status_code == 422, refused.text
        assert refused.json()["error"]["code"] == "invalid_workflow"

        response = await api.http.post(BACKENDS, json={"url": new.url + "/", "capacity": 1})
        assert response.status_code == 201, response.text
        added = response.json()
        assert added["name"] == new.url and added["registered"] is True
        assert added["capacity"] == 1 and added["healthy"] and added["node_classes"] > 10
        assert response.headers["location"] == f"{BACKENDS}/{added['id']}"
        assert (await api.http.get(f"{BACKENDS}/{added['id']}")).json()["name"] == new.url

        final = await finish(
            api.http, (await submit(api.http, job_on("special.safetensors")))["id"]
        )
        assert final["status"] == "succeeded" and final["backend"] == new.url


async def test_jobs_queued_before_a_backend_is_registered_run_on_it(
    make_engine: EngineFactory, start_api: StartApi
) -> None:
    async with make_engine() as base, make_engine() as new:
        api = await start_api(backends=[base.url])
        ident = (await backends(api))[base.url]["id"]
        await api.http.post(f"{BACKENDS}/{ident}/drain")
        job = await submit(api.http, long_job(steps=2))
        assert (await api.http.post(BACKENDS, json={"url": new.url})).status_code == 201
        final = await finish(api.http, job["id"])
        assert final["status"] == "succeeded" and final["backend"] == new.url


async def test_registration_is_validated_with_clear_errors(
    make_engine: EngineFactory, start_api: StartApi
) -> None:
    async with make_engine() as base:
        api = await start_api(backends=[base.url], connect_timeout_s=1.0)
        cases: list[tuple[dict[str, Any], int, str, str]] = [
            ({"url": "ftp://gpu1:8188"}, 422, "invalid_request", "url"),
            ({"url": "gpu1:8188"}, 422, "invalid_request", "url"),
            ({"url": "http://user:pw@gpu1:8188"}, 422, "invalid_request", "url"),
            ({"url": "http://gpu\x001:8188"}, 422, "invalid_request", "url"),
            ({"url": "http://127.0.0.1:1"}, 422, "backend_unreachable", "url"),
            ({"url": base.url, "capacity": 0}, 422, "invalid_request", "capacity"),
            ({"url": base.url, "weight": 2}, 422, "invalid_request", "weight"),
            ({}, 422, "invalid_request", "url"),
            ({"url": base.url}, 409, "backend_conflict", ""),
        ]
        for body, status, code, field in cases:
            response = await api.http.post(BACKENDS, json=body)
            assert response.status_code == status, (body, response.text)
            error = response.json()["error"]
            assert error["code"] == code, (body, error)
            if field:
                assert error["details"]["field"] == field, (body, error)
                assert error["details"]["accepted"], (body, error)
        unreachable = await api.http.post(BACKENDS, json={"url": "http://127.0.0.1:1"})
        assert "/object_info" in unreachable.json()["error"]["message"]
        assert set(await backends(api)) == {base.url}


async def test_remove_unknown_and_configured_backends_are_refused(
    make_engine: EngineFactory, start_api: StartApi
) -> None:
    async with make_engine() as base:
        api = await start_api(backends=[base.url])
        ident = (await backends(api))[base.url]["id"]
        configured = await api.http.delete(f"{BACKENDS}/{ident}")
        assert configured.status_code == 409
        assert "configured" in configured.json()["error"]["message"]
        for method, path in (("DELETE", "nope"), ("POST", "nope/drain"), ("GET", "nope")):
            missing = await api.http.request(method, f"{BACKENDS}/{path}")
            assert missing.status_code == 404
            assert ident in missing.json()["error"]["message"]


async def test_removing_a_busy_backend_lets_its_job_finish_then_drops_it(
    make_engine: EngineFactory, start_api: StartApi
) -> None:
    async with make_engine() as base, make_engine(step_s=0.05) as extra:
        api = await start_api(backends=[base.url])
        await api.http.post(f"{BACKENDS}/{(await backends(api))[base.url]['id']}/drain")
        ident = (await api.http.post(BACKENDS, json={"url": extra.url})).json()["id"]
        job = await submit(api.http, long_job(steps=30))
        await wait_status(api.http, job["id"], "running")

        pending = await api.http.delete(f"{BACKENDS}/{ident}")
        assert pending.status_code == 202, pending.text
        assert pending.json()["removing"] is True and pending.json()["busy"] == 1
        final = await finish(api.http, job["id"])
        assert final["status"] == "succeeded" and final["backend"] == extra.url
        assert await until(api, extra.url, lambda v: v is None) is None
        assert (await api.http.get(f"{BACKENDS}/{ident}")).status_code == 404

        # Idle: gone at once; and it can be registered again.
        ident = (await api.http.post(BACKENDS, json={"url": extra.url})).json()["id"]
        assert (await api.http.delete(f"{BACKENDS}/{ident}")).status_code == 204
        assert extra.url not in await backends(api)


async def test_registered_backends_and_drain_flags_survive_a_restart(
    make_engine: EngineFactory, start_api: StartApi
) -> None:
    async with make_engine() as base, make_engine() as extra:
        first = await start_api(backends=[base.url])
        await first.http.post(BACKENDS, json={"url": extra.url, "capacity": 3})
        await first.http.post(f"{BACKENDS}/{(await backends(first))[base.url]['id']}/drain")
        await first.server.stop()

        second = await start_api(backends=[base.url])  # the same database
        listed = await backends(second)
        assert listed[extra.url]["registered"] and listed[extra.url]["capacity"] == 3
        assert listed[extra.url]["healthy"] and listed[base.url]["draining"]
        final = await finish(second.http, (await submit(second.http, long_job(steps=2)))["id"])
        assert final["backend"] == extra.url


async def test_a_registered_backend_replaces_the_embedded_engine_at_the_next_start(
    make_engine: EngineFactory, start_api: StartApi
) -> None:
    async with make_engine() as gpu:
        first = await start_api()
        assert set(await backends(first)) == {"embedded"}
        assert (await first.http.post(BACKENDS, json={"url": gpu.url})).status_code == 201
        await first.server.stop()
        second = await start_api()
        assert set(await backends(second)) == {gpu.url}


async def test_other_processes_adopt_registrations_and_removals(
    make_engine: EngineFactory, start_api: StartApi
) -> None:
    async with make_engine() as base, make_engine() as extra:
        one = await start_api(backends=[base.url], **FAST)
        two = await start_api(backends=[base.url], **FAST)  # shares one's database
        ident = (await one.http.post(BACKENDS, json={"url": extra.url})).json()["id"]
        adopted = await until(two, extra.url, lambda v: v is not None and v["healthy"])
        assert adopted is not None and adopted["registered"] and adopted["id"] == ident
        assert (await one.http.post(f"{BACKENDS}/{ident}/drain")).status_code == 200
        await until(two, extra.url, lambda v: v is not None and v["draining"])
        assert (await one.http.delete(f"{BACKENDS}/{ident}")).status_code == 204
        assert await until(two, extra.url, lambda v: v is None) is None


async def test_backend_routes_need_the_admin_scope(start_api: StartApi) -> None:
    api = await start_api(auth="on")
    async with httpx.AsyncClient(base_url=api.url, timeout=5) as anonymous:
        for method, path in (("GET", BACKENDS), ("POST", BACKENDS), ("DELETE", f"{BACKENDS}/x")):
            response = await anonymous.request(method, path)
            assert response.status_code == 401, (method, path, response.text)


async def test_unknown_model_names_fetch_the_catalogue_once_not_once_each(
    make_engine: EngineFactory, start_api: StartApi
) -> None:
    async with make_engine() as engine:
        api = await start_api(backends=[engine.url], workers=False)
        backend = api.services.backends.backends[engine.url]
        fetch = backend.client.object_info
        fetches = 0

        async def counted() -> dict[str, Any]:  # a spy: every call still reaches the engine
            nonlocal fetches
            fetches += 1
            return await fetch()

        backend.client.object_info = counted  # type: ignore[method-assign]
        # As if the catalogue fetched at start were older than the refresh interval.
        assert backend.fetched_mono is not None
        backend.fetched_mono -= ENUM_REFRESH_MIN_S

        bad = job_on("missing.safetensors")
        answers = await asyncio.gather(*(api.http.post("/api/v2/jobs", json=bad) for _ in range(5)))
        assert [a.status_code for a in answers] == [422] * 5
        assert all(a.json()["error"]["code"] == "invalid_workflow" for a in answers)
        assert fetches == 1  # one refresh for the five, and none for the ones after it
        assert (await api.http.post("/api/v2/jobs", json=bad)).status_code == 422
        assert fetches == 1

        # A model added on the backend later is found by the next refresh (DECISIONS 12).
        state = engine.state
        state.options = replace(state.options, checkpoints=("fresh.safetensors",))
        state.forget_object_info()
        backend.fetched_mono -= ENUM_REFRESH_MIN_S
        accepted = await api.http.post("/api/v2/jobs", json=job_on("fresh.safetensors"))
        assert accepted.status_code == 201, accepted.text
        assert fetches == 2
