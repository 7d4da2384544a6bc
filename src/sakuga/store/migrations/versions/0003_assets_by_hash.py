"""assets by hash (the retention sweep asks whether any asset still uses a blob)

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01 06:05:00
"""

from __future__ import annotations

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_assets_hash", "assets", ["hash"])
    op.create_index("ix_jobs_expires_at", "jobs", ["expires_at"])


def downgrade() -> None:
    op.drop_index("ix_jobs_expires_at", table_name="jobs")
    op.drop_index("ix_assets_hash", table_name="assets")
