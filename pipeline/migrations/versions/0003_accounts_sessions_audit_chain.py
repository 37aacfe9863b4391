"""account ids, server-side sessions, failed-password counter, audit hash chain, batch attempts

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-24 06:30:00
"""

from __future__ import annotations

import uuid

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.add_column(sa.Column("id", sa.String(length=32), nullable=True))
        batch.add_column(sa.Column("failed_logins", sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("failed_since", sa.DateTime(timezone=True), nullable=True))
    connection = op.get_bind()
    for (username,) in connection.execute(sa.text("SELECT username FROM users")).fetchall():
        connection.execute(
            sa.text("UPDATE users SET id = :id WHERE username = :name"),
            {"id": uuid.uuid4().hex, "name": username},
        )
    with op.batch_alter_table("users") as batch:
        batch.alter_column("id", existing_type=sa.String(length=32), nullable=False)
        batch.create_unique_constraint("uq_users_id", ["id"])

    with op.batch_alter_table("api_tokens") as batch:
        batch.add_column(sa.Column("user_id", sa.String(length=32), nullable=True))
        batch.create_index("ix_api_tokens_user_id", ["user_id"], unique=False)
    connection.execute(
        sa.text(
            "UPDATE api_tokens SET user_id = "
            "(SELECT id FROM users WHERE users.username = api_tokens.username)"
        )
    )

    op.create_table(
        "web_sessions",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("user_id", sa.String(length=32), nullable=False),
        sa.Column("username", sa.String(length=100), nullable=False),
        sa.Column("csrf", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("ended_reason", sa.String(length=40), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_web_sessions_user_id", "web_sessions", ["user_id"], unique=False)

    with op.batch_alter_table("audit_log") as batch:
        batch.add_column(sa.Column("prev_hash", sa.String(length=64), nullable=False, server_default=""))
        batch.add_column(sa.Column("hash", sa.String(length=64), nullable=False, server_default=""))
    op.create_table(
        "audit_head",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("rows", sa.Integer(), nullable=False),
        sa.Column("last_id", sa.Integer(), nullable=False),
        sa.Column("last_hash", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    _chain_existing_rows(connection)

    with op.batch_alter_table("batches") as batch:
        batch.add_column(sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"))


def _chain_existing_rows(connection: sa.engine.Connection) -> None:
    """Link the rows written before the chain existed, in id order, and write the head."""
    from pipeline.store.audit import GENESIS, HEAD_ID, row_hash

    previous, last_id, count = GENESIS, 0, 0
    table = sa.Table(  # the table as it is at this revision (later ones add columns)
        "audit_log",
        sa.MetaData(),
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("at", sa.DateTime(timezone=True)),
        sa.Column("user", sa.String(100)),
        sa.Column("action", sa.String(30)),
        sa.Column("target", sa.Text),
        sa.Column("details", sa.JSON),
        sa.Column("prev_hash", sa.String(64)),
        sa.Column("hash", sa.String(64)),
    )
    rows = connection.execute(sa.select(table).order_by(table.c.id)).mappings().fetchall()
    for row in rows:
        digest = row_hash(
            previous, row["id"], row["at"], row["user"], row["action"], row["target"], row["details"]
        )
        connection.execute(
            sa.update(table).where(table.c.id == row["id"]).values(prev_hash=previous, hash=digest)
        )
        previous, last_id, count = digest, row["id"], count + 1
    connection.execute(
        sa.text("INSERT INTO audit_head (id, rows, last_id, last_hash) VALUES (:id, :rows, :last, :hash)"),
        {"id": HEAD_ID, "rows": count, "last": last_id, "hash": previous},
    )


def downgrade() -> None:
    with op.batch_alter_table("batches") as batch:
        batch.drop_column("attempts")
    op.drop_table("audit_head")
    with op.batch_alter_table("audit_log") as batch:
        batch.drop_column("hash")
        batch.drop_column("prev_hash")
    op.drop_index("ix_web_sessions_user_id", table_name="web_sessions")
    op.drop_table("web_sessions")
    with op.batch_alter_table("api_tokens") as batch:
        batch.drop_index("ix_api_tokens_user_id")
        batch.drop_column("user_id")
    with op.batch_alter_table("users") as batch:
        batch.drop_constraint("uq_users_id", type_="unique")
        batch.drop_column("failed_since")
        batch.drop_column("failed_logins")
        batch.drop_column("id")
