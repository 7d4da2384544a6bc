"""``python -m bench.floor``: what the mandated stack alone costs a job, with no sakuga in it.

A bare server built from the same libraries sakuga uses (FastAPI, pydantic, sse-starlette,
SQLAlchemy on SQLite in WAL with commits on one database thread, httpx and websockets to
the stand-in engine in its own process) does only the steps no job server can skip:

    POST /api/v2/jobs: parse the body, insert the job (committed), answer 201
    the worker: claim the job (a committed UPDATE), POST /prompt, follow the shared
      websocket to the prompt's end, GET /view of its output and GET /history, store the
      outcome (a committed UPDATE)
    GET /api/v2/jobs/{id}/events: read the job, send its status, send the terminal status

No validation, templates, leases, retries, progress, blobs, telemetry or webhooks. The
same client as ``bench.run``'s overhead row measures it the same way (end to end minus the
engine's own execution window), so the two rows compare directly: the floor is what a
job costs on this machine before sakuga adds anything.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
import sqlalchemy as sa
from fastapi import FastAPI
from pydantic import BaseModel
from sse_starlette import EventSourceResponse, ServerSentEvent
from websockets.asyncio.client import ClientConnection, connect

from bench import loops
from bench.engine_process import engine_process
from bench.engine_times import gaps_s, windows
from bench.loadgen import LoadSpec, SequentialSpec
from bench.remote import Clients
from bench.stats import Summary
from sakuga.serving import UvicornServer

T = TypeVar("T")
WARMUP = 20
TIMEOUT_S = 10.0
FIRST_INDEX = 7_000_000  # inputs apart from every other benchmark's: no engine cache hit
TERMINAL = frozenset({"succeeded", "failed"})
SUBMITTERS = 32  # client connections, as bench.run's submission rows

jobs_table = sa.Table(
    "jobs",
    sa.MetaData(),
    sa.Column("id", sa.String, primary_key=True),
    sa.Column("status", sa.String, nullable=False),
    sa.Column("body", sa.JSON, nullable=False),
    sa.Column("updated", sa.Float, nullable=False),
)


class JobIn(BaseModel):
    """The submit body ``bench.client`` sends."""

    template: str
    params: dict[str, Any] = {}


class Db:
    """SQLite through SQLAlchemy Core, every statement committed on one thread in order."""

    def __init__(self, path: Path) -> None:
        self.engine = sa.create_engine(f"sqlite:///{path}")
        with self.engine.begin() as conn:
            conn.exec_driver_sql("PRAGMA journal_mode=WAL")
            jobs_table.create(conn)
        self._conn = self.engine.connect()
        self._conn.exec_driver_sql("PRAGMA synchronous=NORMAL")
        self._conn.commit()
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="floor-db")

    async def run(self, work: Callable[[sa.Connection], T]) -> T:
        def unit() -> T:
            try:
                result = work(self._conn)
                self._conn.commit()
                return result
            except BaseException:
                self._conn.rollback()
                raise

        return await asyncio.get_running_loop().run_in_executor(self._thread, unit)

    def close(self) -> None:
        self._thread.shutdown(wait=True)
        self._conn.close()
        self.engine.dispose()


class Floor:
    """The bare server's state: its database, the job queue, the engine and who waits."""

    def __init__(self, db: Db, engine_url: str, capacity: int = 1) -> None:
        self.db = db
        self.engine_url = engine_url
        self.capacity = capacity  # worker loops on the one engine: prompts in flight
        self.start = asyncio.Event()  # held back to fill the queue first (the gap rows)
        self.queue: asyncio.Queue[str] = asyncio.Queue()
        self.changed: dict[str, asyncio.Event] = {}
        self.ended: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self.client_id = f"floor-{uuid.uuid4().hex}"

    async def set_status(self, job_id: str, status: str) -> dict[str, Any]:
        """Commit the job's new status, wake its event stream; returns the job's body."""
        statement = (
            jobs_table.update()
            .where(jobs_table.c.id == job_id)
            .values(status=status, updated=time.time())
            .returning(jobs_table.c.body)
        )
        body: dict[str, Any] = await self.db.run(lambda conn: conn.execute(statement).scalar_one())
        self.changed.setdefault(job_id, asyncio.Event()).set()
        return body

    async def status(self, job_id: str) -> str:
        query = sa.select(jobs_table.c.status).where(jobs_table.c.id == job_id)
        status: str = await self.db.run(lambda conn: conn.execute(query).scalar_one())
        return status

    async def work(self) -> None:
        """The worker: ``capacity`` loops taking queued jobs, once ``start`` is set."""
        async with (
            httpx.AsyncClient(base_url=self.engine_url, timeout=TIMEOUT_S) as http,
            connect(self._ws_url(), open_timeout=TIMEOUT_S) as socket,
            asyncio.TaskGroup() as group,
        ):
            await self.start.wait()
            group.create_task(self._read(socket))
            for _ in range(self.capacity):
                group.create_task(self._loop(http))

    async def _loop(self, http: httpx.AsyncClient) -> None:
        while True:
            await self._run(http, await self.queue.get())
            self.queue.task_done()

    async def _run(self, http: httpx.AsyncClient, job_id: str) -> None:
        body = await self.set_status(job_id, "running")  # the claim
        ended = self.ended[job_id] = asyncio.get_running_loop().create_future()
        prompt = _blank_graph(int(body["params"].get("color", 0)))
        payload = {"prompt": prompt, "client_id": self.client_id, "prompt_id": job_id}
        (await http.post("/prompt", json=payload)).raise_for_status()
        try:
            async with asyncio.timeout(TIMEOUT_S):
                image = await ended
        finally:
            del self.ended[job_id]
        view, history = await asyncio.gather(
            http.get("/view", params=image), http.get(f"/history/{job_id}")
        )
        ok = view.status_code == 200 and job_id in history.json()
        await self.set_status(job_id, "succeeded" if ok else "failed")

    async def _read(self, socket: ClientConnection) -> None:
        # ComfyUI's order: `executed` (with the outputs) comes before `execution_success`.
        images: dict[str, dict[str, Any]] = {}
        async for raw in socket:
            if isinstance(raw, bytes):
                continue
            message = json.loads(raw)
            data = message.get("data", {})
            prompt_id = data.get("prompt_id", "")
            if message["type"] == "executed":
                images[prompt_id] = data["output"]["images"][0]
            elif message["type"] == "execution_success" and prompt_id in self.ended:
                self.ended[prompt_id].set_result(images.pop(prompt_id))

    def _ws_url(self) -> str:
        return f"{self.engine_url.replace('http', 'ws', 1)}/ws?clientId={self.client_id}"


def create_floor_app(floor: Floor) -> FastAPI:
    """The bare job API: submit and the event stream, nothing else."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        worker = asyncio.create_task(floor.work())
        yield
        worker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await worker

    app = FastAPI(lifespan=lifespan)

    @app.post("/api/v2/jobs", status_code=201)
    async def submit(job: JobIn) -> dict[str, str]:
        job_id = uuid.uuid4().hex
        row = {"id": job_id, "status": "queued", "body": job.model_dump(), "updated": time.time()}
        await floor.db.run(lambda conn: conn.execute(jobs_table.insert(), row))
        floor.queue.put_nowait(job_id)
        return {"id": job_id}

    @app.get("/api/v2/jobs/{job_id}/events")
    async def events(job_id: str) -> EventSourceResponse:
        changed = floor.changed.setdefault(job_id, asyncio.Event())

        async def frames() -> AsyncIterator[ServerSentEvent]:
            while True:
                changed.clear()
                status = await floor.status(job_id)
                yield ServerSentEvent(json.dumps({"status": status}), event="status")
                if status in TERMINAL:
                    floor.changed.pop(job_id, None)
                    return
                await changed.wait()

        return EventSourceResponse(frames())

    return app


def _blank_graph(color: int) -> dict[str, Any]:
    return {
        "1": {
            "class_type": "EmptyImage",
            "inputs": {"width": 64, "height": 64, "batch_size": 1, "color": color},
        },
        "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "f"}},
    }


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.floor", description=__doc__)
    parser.add_argument("--jobs", type=int, default=150, help="jobs per row (default 150)")
    return parser.parse_args(argv)


@contextlib.asynccontextmanager
async def floor_server(
    tmp: Path, engine_url: str, name: str, capacity: int = 1
) -> AsyncIterator[tuple[Floor, str]]:
    """A bare server on a fresh database; its worker waits for ``floor.start``."""
    db = Db(tmp / f"{name}.db")
    try:
        floor = Floor(db, engine_url, capacity)
        async with UvicornServer(create_floor_app(floor)) as server:
            yield floor, server.url
    finally:
        db.close()


@dataclass(frozen=True)
class FloorRow:
    """One measurement of the bare server; ``p50_ms`` is the overhead, latency or gap."""

    name: str
    jobs: int
    failed: int
    p50_ms: float
    server_cpu_ms_per_job: float
    note: str

    def line(self) -> str:
        return (
            f"{self.name}: p50 {self.p50_ms:.1f} ms; {self.jobs} jobs ({self.failed} failed), "
            f"server CPU {self.server_cpu_ms_per_job:.1f} ms/job; {self.note}"
        )


async def sequential(clients: Clients, tmp: Path, engine_url: str, jobs: int) -> FloorRow:
    """Jobs one at a time, measured as ``bench.run``'s overhead row."""
    async with floor_server(tmp, engine_url, "sequential") as (floor, url):
        floor.start.set()
        await clients.sequential(SequentialSpec(url, ("blank",) * WARMUP, first_index=FIRST_INDEX))
        spec = SequentialSpec(url, ("blank",) * jobs, first_index=FIRST_INDEX + WARMUP)
        cpu = time.process_time()
        timings = await clients.sequential(spec)
        cpu = time.process_time() - cpu
    found = await windows(engine_url, (t.job_id for t in timings))
    overheads = [
        t.end_to_end_s - found[t.job_id].duration_s
        for t in timings
        if t.status == "succeeded" and t.job_id in found
    ]
    end_to_end = statistics.median(t.end_to_end_s for t in timings)
    return FloorRow(
        "overhead per job, blank (sequential)",
        len(timings),
        len(timings) - len(overheads),
        1000 * statistics.median(overheads),
        1000 * cpu / len(timings),
        f"end to end p50 {1000 * end_to_end:.1f} ms",
    )


async def submissions(clients: Clients, tmp: Path, engine_url: str) -> FloorRow:
    """32 keep-alive connections submitting for 5 s, the worker held: the queue fills."""
    async with floor_server(tmp, engine_url, "submit") as (_, url):
        spec = LoadSpec(url, "submit", SUBMITTERS, 5000, 5.0, warmup=2 * SUBMITTERS)
        cpu = time.process_time()
        result = await clients.load(spec)
        cpu = time.process_time() - cpu
    summary = Summary.of_seconds(result.latencies_s, elapsed_s=result.elapsed_s)
    done = len(result.latencies_s) + 2 * SUBMITTERS
    return FloorRow(
        f"submit, workers off, {SUBMITTERS} connections",
        len(result.latencies_s),
        result.errors,
        summary.p50_ms,
        1000 * cpu / max(1, done),
        f"{summary.rate_per_s or 0:.0f} submissions/s",
    )


async def gap(tmp: Path, engine_url: str, jobs: int, capacity: int) -> FloorRow:
    """Queue ``jobs``, then drain them with ``capacity`` prompts in flight; the engine's gaps."""
    index = FIRST_INDEX + 1_000_000 * capacity
    async with (
        floor_server(tmp, engine_url, f"gap{capacity}", capacity) as (floor, url),
        httpx.AsyncClient(base_url=url, timeout=TIMEOUT_S) as http,
    ):
        job_ids = []
        for i in range(jobs):
            body = {"template": "blank", "params": {"color": (index + i) % 0xFFFFFF}}
            response = await http.post("/api/v2/jobs", json=body)
            response.raise_for_status()
            job_ids.append(response.json()["id"])
        wall, cpu = time.perf_counter(), time.process_time()
        floor.start.set()
        async with asyncio.timeout(TIMEOUT_S + jobs):
            await floor.queue.join()
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    found = await windows(engine_url, job_ids)
    prefetched = f"{capacity - 1} prefetched" if capacity > 1 else "no prefetch"
    return FloorRow(
        f"gap between jobs, capacity {capacity} ({prefetched})",
        jobs,
        jobs - len(found),
        1000 * statistics.median(gaps_s(found.values())),
        1000 * cpu / jobs,
        f"{jobs / wall:.0f} jobs/s drained",
    )


async def main_async(args: argparse.Namespace) -> list[FloorRow]:
    """Every row, on one engine process."""
    with tempfile.TemporaryDirectory(prefix="sakuga-floor-") as tmp:
        async with Clients() as clients, engine_process(Path(tmp) / "engine") as engine_url:
            rows = [
                await sequential(clients, Path(tmp), engine_url, args.jobs),
                await submissions(clients, Path(tmp), engine_url),
            ]
            for capacity in (1, 2):
                rows.append(await gap(Path(tmp), engine_url, args.jobs, capacity))
    return rows


def main(argv: Sequence[str] | None = None) -> None:
    rows = loops.run(main_async(parse_args(argv)), "uvloop")
    print("floor (the stack alone, no sakuga), engine process, SQLite:")
    for row in rows:
        print(f"  {row.line()}")


if __name__ == "__main__":
    main()
