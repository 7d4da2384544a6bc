"""The one gateway to the database: ``async with Store(url) as store``."""

from __future__ import annotations

from types import TracebackType

from sakuga.store.assets import AssetStore
from sakuga.store.backends import BackendStore
from sakuga.store.db import Database
from sakuga.store.jobs import JobStore, NewJob
from sakuga.store.keys import KeyStore
from sakuga.store.leases import Lease, LeaseStore
from sakuga.store.migrate import upgrade
from sakuga.store.outbox import Outbox
from sakuga.store.retention import Retention
from sakuga.store.telemetry import TelemetryWriter
from sakuga.store.writer import SubmitWriter

__all__ = ["Lease", "NewJob", "Store"]


class Store:
    """Database, query gateways and the grouped writers, opened and closed together."""

    def __init__(self, url: str, *, retention_s: int = 7 * 24 * 3600, migrate: bool = True):
        self.db = Database(url)
        self.outbox = Outbox(self.db)
        self.jobs = JobStore(self.db, retention_s=retention_s, outbox=self.outbox)
        self.leases = LeaseStore(self.db, self.outbox)
        self.assets = AssetStore(self.db)
        self.backends = BackendStore(self.db)
        self.keys = KeyStore(self.db)
        self.retention = Retention(self.db)
        self.writer = SubmitWriter(self.jobs)
        self.telemetry = TelemetryWriter(self.db)
        self._migrate = migrate

    async def __aenter__(self) -> Store:
        if self._migrate:
            await upgrade(self.db)
        self.writer.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.writer.stop()
        await self.telemetry.stop()
        await self.db.dispose()
