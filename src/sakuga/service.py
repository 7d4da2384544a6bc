"""Everything one sakuga process runs, opened in order and closed in reverse.

Store -> artifacts -> backends (the embedded engine when none is configured or registered)
-> their health probes -> webhook deliverer -> workers -> the retention sweep.
"""

from __future__ import annotations

import contextlib
import logging
from types import TracebackType

from sakuga.api.deps import Services
from sakuga.api.signing import UrlSigner
from sakuga.artifacts import Artifacts
from sakuga.comfy.client import Deadlines
from sakuga.domain.breaker import BreakerPolicy
from sakuga.domain.templates import TemplateLimits
from sakuga.metrics import Metrics
from sakuga.notify import Notifier
from sakuga.prompt_keys import PromptKeys
from sakuga.settings import Settings
from sakuga.store import Store
from sakuga.store.channel import PgChannel
from sakuga.store.local_channel import LocalChannel, sqlite_file
from sakuga.worker.backends import BackendPool
from sakuga.worker.health import HealthMonitor
from sakuga.worker.pool import WorkerPool, new_worker_id
from sakuga.worker.runner import RunContext
from sakuga.worker.sweeper import Sweeper
from sakuga.worker.webhooks import WebhookDeliverer

log = logging.getLogger(__name__)

# The backend name of the in-process engine: stable across restarts, whatever its port.
EMBEDDED = "embedded"


def deadlines(settings: Settings) -> Deadlines:
    return Deadlines(
        connect_s=settings.connect_timeout_s,
        silence_s=settings.silence_timeout_s,
        job_s=settings.job_timeout_s,
        history_poll_s=settings.history_poll_s,
    )


class Service:
    """``async with Service(settings) as service``: the whole server minus HTTP."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._stack = contextlib.AsyncExitStack()
        self.services: Services | None = None
        self.engine_url: str | None = None

    async def __aenter__(self) -> Service:
        try:
            await self._open()
        except BaseException:
            await self._stack.aclose()
            raise
        return self

    async def _open(self) -> None:
        settings = self.settings
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        store = await self._stack.enter_async_context(
            Store(settings.database_url, retention_s=settings.retention_s)
        )
        artifacts = Artifacts(settings.artifacts_dir)
        notifier = Notifier()
        # Other API and worker processes may share this database: wake them too.
        if not store.db.is_sqlite:
            await self._stack.enter_async_context(PgChannel(settings.database_url, notifier))
        elif (db_file := sqlite_file(settings.database_url)) is not None:
            await self._stack.enter_async_context(LocalChannel(db_file, notifier))
        endpoints = {url: url for url in settings.backends}
        # The stand-in engine only when no backend is configured *or registered* at run time.
        if not endpoints and not any(row.registered for row in await store.backends.rows()):
            from sakuga.engine.options import EngineOptions
            from sakuga.engine.server import EngineServer

            engine = await self._stack.enter_async_context(
                EngineServer(
                    EngineOptions(
                        data_dir=settings.data_dir / "engine", step_s=settings.engine_step_s
                    ),
                    host="127.0.0.1",
                    port=settings.engine_port,
                )
            )
            self.engine_url = engine.url
            endpoints = {EMBEDDED: engine.url}
            log.info("embedded engine at %s (stand-in renderer, not a diffusion model)", engine.url)
        backends = await self._stack.enter_async_context(
            BackendPool(
                endpoints,
                capacity=settings.backend_capacity,
                deadlines=deadlines(settings),
                breaker=BreakerPolicy(settings.breaker_failures, settings.breaker_reset_s),
            )
        )
        await backends.load(store)
        await backends.open_all(store)
        await self._stack.enter_async_context(HealthMonitor(backends, store, settings))
        metrics = Metrics()
        self.services = Services(
            settings=settings,
            store=store,
            artifacts=artifacts,
            notifier=notifier,
            backends=backends,
            limits=TemplateLimits.from_settings(settings),
            metrics=metrics,
            signer=UrlSigner.from_settings(settings),
            prompt_keys=PromptKeys(),
        )
        if settings.workers:
            ctx = RunContext(
                settings,
                store,
                artifacts,
                notifier,
                new_worker_id(),
                metrics=metrics,
                prompt_keys=self.services.prompt_keys,
            )
            await self._stack.enter_async_context(
                WebhookDeliverer(store, settings, notifier, ctx.worker_id, metrics=metrics)
            )
            await self._stack.enter_async_context(WorkerPool(ctx, backends))
            await self._stack.enter_async_context(
                Sweeper(store, artifacts, notifier, every_s=settings.sweep_s, metrics=metrics)
            )

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._stack.aclose()
