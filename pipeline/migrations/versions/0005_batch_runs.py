"""batches: their Prefect flow run, items and pages planned; audit rows: the key that hashed them

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-24 10:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("batches") as batch:
        batch.add_column(sa.Column("flow_run_id", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("items_planned", sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("pages_planned", sa.Integer(), nullable=False, server_default="0"))
    with op.batch_alter_table("audit_log") as batch:
        batch.add_column(sa.Column("key_id", sa.String(length=16), nullable=False, server_default=""))


def downgrade() -> None:
    with op.batch_alter_table("audit_log") as batch:
        batch.drop_column("key_id")
    with op.batch_alter_table("batches") as batch:
        batch.drop_column("pages_planned")
        batch.drop_column("items_planned")
        batch.drop_column("flow_run_id")
