"""The database schema (SQLAlchemy Core). Alembic migrations must produce exactly this."""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    false,
)

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_name)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s",
        "pk": "pk_%(table_name)s",
    }
)

# ``seq`` is the integer key (SQLite rowid): queue order, queue positions and list cursors.
jobs = Table(
    "jobs",
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("id", String(36), nullable=False, unique=True),
    Column("owner", String(64), nullable=False),
    Column("status", String(16), nullable=False),
    Column("template", String(64)),
    Column("params", JSON),
    Column("workflow", JSON, nullable=False),
    Column("metadata", JSON, nullable=False),
    Column("fingerprint", String(64), nullable=False),
    Column("idempotency_key", String(255)),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("started_at", DateTime(timezone=True)),
    Column("completed_at", DateTime(timezone=True)),
    Column("expires_at", DateTime(timezone=True), nullable=False),
    Column("progress", JSON),
    Column("error", JSON),
    Column("backend", String(255)),
    Column("eligible_backends", JSON, nullable=False),
    Column("attempt_count", Integer, nullable=False, default=0),
    Column("cancel_requested", Boolean, nullable=False, default=False),
    Column("lease_owner", String(64)),
    # Epoch seconds from the database clock, so workers on skewed hosts agree.
    Column("lease_expires", Float),
    Column("run_ms", BigInteger),
    # Retries: the job is not claimable before ``not_before`` (epoch s, database clock).
    Column("not_before", Float),
    Column("transient_failures", Integer, nullable=False, default=0, server_default="0"),
    # Crashes and out-of-memory on a backend; at 3 the job is failed as poison.
    Column("poison_strikes", Integer, nullable=False, default=0, server_default="0"),
    Column("webhook_url", Text),
    UniqueConstraint("owner", "idempotency_key", name="uq_jobs_owner_idempotency_key"),
)
Index("ix_jobs_status_seq", jobs.c.status, jobs.c.seq)
Index("ix_jobs_owner_seq", jobs.c.owner, jobs.c.seq)
Index("ix_jobs_fingerprint_seq", jobs.c.fingerprint, jobs.c.seq)
Index("ix_jobs_expires_at", jobs.c.expires_at)

attempts = Table(
    "attempts",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("job_id", String(36), ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False),
    Column("number", Integer, nullable=False),
    Column("backend", String(255), nullable=False),
    Column("prompt_id", String(64), nullable=False),
    Column("client_id", String(64), nullable=False),
    Column("worker_id", String(64), nullable=False),
    Column("started_at", DateTime(timezone=True), nullable=False),
    Column("finished_at", DateTime(timezone=True)),
    Column("error", JSON),
    # Backend telemetry around the run (e.g. /system_stats VRAM before and after).
    Column("telemetry", JSON),
    UniqueConstraint("job_id", "number", name="uq_attempts_job_id_number"),
)

# Assets are uploads and job outputs alike: a record over a blob keyed by its blake3.
assets = Table(
    "assets",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("owner", String(64), nullable=False),
    Column("hash", String(80), nullable=False),
    Column("size_bytes", BigInteger, nullable=False),
    Column("content_type", String(128), nullable=False),
    Column("file_path", Text),
    Column("tags", JSON, nullable=False),
    Column("job_id", String(36), ForeignKey("jobs.id", ondelete="CASCADE")),
    Column("node_id", String(64)),
    Column("kind", String(16), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)
Index("ix_assets_owner_hash", assets.c.owner, assets.c.hash)
Index("ix_assets_owner_file_path", assets.c.owner, assets.c.file_path)
Index("ix_assets_job_id", assets.c.job_id)
Index("ix_assets_hash", assets.c.hash)

# Blobs an asset stopped using (deleted, or its job's retention ended): the retention
# sweep removes each once nothing uses it and its grace period has passed.
blob_releases = Table(
    "blob_releases",
    metadata,
    Column("hash", String(80), primary_key=True),
    Column("released_at", DateTime(timezone=True), nullable=False),
)

# Each backend's last /object_info, so validation works right after a restart; backends
# registered at run time (``registered``) are also re-opened from here on start.
backends = Table(
    "backends",
    metadata,
    Column("url", String(255), primary_key=True),
    Column("object_info", JSON, nullable=False),
    Column("refreshed_at", DateTime(timezone=True), nullable=False),
    Column("registered", Boolean, nullable=False, default=False, server_default=false()),
    Column("capacity", Integer),
    Column("draining", Boolean, nullable=False, default=False, server_default=false()),
)

# API keys: only the SHA-256 of the secret is stored; ``owner`` scopes every row a key sees.
api_keys = Table(
    "api_keys",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("key_hash", String(64), nullable=False, unique=True),
    Column("prefix", String(16), nullable=False),
    Column("name", String(128)),
    Column("owner", String(64), nullable=False),
    Column("scopes", JSON, nullable=False),
    Column("webhook_url", Text),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("revoked_at", DateTime(timezone=True)),
)

# The webhook outbox: written in the same transaction as the job state change it reports.
webhook_deliveries = Table(
    "webhook_deliveries",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("seq", BigInteger, nullable=False),
    Column("job_id", String(36), ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False),
    Column("owner", String(64), nullable=False),
    Column("url", Text, nullable=False),
    Column("event_type", String(64), nullable=False),
    Column("payload", JSON, nullable=False),
    Column("status", String(16), nullable=False),
    Column("attempts", Integer, nullable=False, default=0, server_default="0"),
    Column("next_attempt_at", Float, nullable=False),
    Column("lease_owner", String(64)),
    Column("lease_expires", Float),
    Column("last_error", Text),
    Column("last_status_code", Integer),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("delivered_at", DateTime(timezone=True)),
)
Index(
    "ix_webhook_deliveries_status_next",
    webhook_deliveries.c.status,
    webhook_deliveries.c.next_attempt_at,
)
Index("ix_webhook_deliveries_job_id", webhook_deliveries.c.job_id)
