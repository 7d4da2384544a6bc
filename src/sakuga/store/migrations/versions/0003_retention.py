"""retention: assets by hash, jobs by expiry, released blobs

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01 06:05:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_assets_hash", "assets", ["hash"])
    op.create_index("ix_jobs_expires_at", "jobs", ["expires_at"])
    op.create_table(
        "blob_releases",
        sa.Column("hash", sa.String(length=80), nullable=False),
        sa.Column("released_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("hash", name=op.f("pk_blob_releases")),
    )


def downgrade() -> None:
    op.drop_table("blob_releases")
    op.drop_index("ix_jobs_expires_at", table_name="jobs")
    op.drop_index("ix_assets_hash", table_name="assets")
