"""archive lifecycle: fixity runs and results, replicas, retention dates, disposal lists and
tombstones (guarded by triggers: never changed or deleted), access requests, the lookup register

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-24 09:00:00
"""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

_FROZEN = ("tombstones", "disposal_items", "disposal_decisions")
_OPEN_ONLY = ("disposal_items", "disposal_decisions")


def _when() -> sa.Column[datetime]:
    return sa.Column("at", sa.DateTime(timezone=True), nullable=False)


def upgrade() -> None:
    with op.batch_alter_table("catalogue") as batch:
        batch.add_column(sa.Column("contract_end_date", sa.String(10), nullable=False, server_default=""))
        batch.add_column(sa.Column("creation_date", sa.String(10), nullable=False, server_default=""))

    op.create_table(
        "fixity_runs",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("root", sa.Text(), nullable=False),
        sa.Column("scope", sa.String(20), nullable=False),
        sa.Column("user", sa.String(100), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("packages", sa.Integer(), nullable=False),
        sa.Column("files", sa.Integer(), nullable=False),
        sa.Column("bytes", sa.BigInteger(), nullable=False),
        sa.Column("problems", sa.Integer(), nullable=False),
        sa.Column("details", sa.JSON(), nullable=True),
    )
    op.create_index("ix_fixity_runs_started_at", "fixity_runs", ["started_at"])
    op.create_table(
        "fixity_results",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("root", sa.Text(), nullable=False),
        sa.Column("archive_code", sa.String(100), nullable=False),
        sa.Column("checked_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ok", sa.Boolean(), nullable=False),
        sa.Column("problems", sa.JSON(), nullable=False),
    )
    op.create_index("ix_fixity_results_run_id", "fixity_results", ["run_id"])
    op.create_index("ix_fixity_results_archive_code", "fixity_results", ["archive_code"])
    op.create_table(
        "fixity_status",
        sa.Column("root", sa.String(1000), nullable=False),
        sa.Column("archive_code", sa.String(100), nullable=False),
        sa.Column("checked_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ok", sa.Boolean(), nullable=False),
        sa.Column("problems", sa.JSON(), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("root", "archive_code"),
    )
    op.create_index("ix_fixity_status_checked_at", "fixity_status", ["checked_at"])
    op.create_table(
        "package_baselines",
        sa.Column("archive_code", sa.String(100), nullable=False),
        sa.Column("pdf_sha256", sa.String(64), nullable=False),
        sa.Column("manifest_sha256", sa.String(64), nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("archive_code", "pdf_sha256"),
    )
    op.create_table(
        "replicas",
        sa.Column("root", sa.String(1000), primary_key=True),
        sa.Column("registered_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("registered_by", sa.String(100), nullable=False),
        sa.Column("last_sync_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_table(
        "replica_copies",
        sa.Column("root", sa.String(1000), nullable=False),
        sa.Column("archive_code", sa.String(100), nullable=False),
        sa.Column("pdf_sha256", sa.String(64), nullable=False),
        sa.Column("manifest_sha256", sa.String(64), nullable=False),
        sa.Column("verified_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("root", "archive_code"),
    )
    _disposal_tables()
    _access_tables()
    if op.get_bind().dialect.name == "postgresql":
        _postgresql_guards()
    else:
        _sqlite_guards()


def _disposal_tables() -> None:
    op.create_table(
        "disposal_lists",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("due_by", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(100), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("approved_by", sa.String(100), nullable=True),
        sa.Column("approved_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("executed_by", sa.String(100), nullable=True),
        sa.Column("executed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("witness", sa.String(200), nullable=True),
    )
    op.create_table(
        "disposal_items",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("list_id", sa.Integer(), nullable=False),
        sa.Column("archive_code", sa.String(100), nullable=False),
        sa.Column("retention", sa.String(50), nullable=False),
        sa.Column("start_date", sa.String(10), nullable=False),
        sa.Column("due_date", sa.String(10), nullable=False),
        sa.Column("catalogue", sa.JSON(), nullable=False),
        sa.UniqueConstraint("list_id", "archive_code", name="uq_disposal_items_list_code"),
    )
    op.create_index("ix_disposal_items_list_id", "disposal_items", ["list_id"])
    op.create_index("ix_disposal_items_archive_code", "disposal_items", ["archive_code"])
    op.create_table(
        "disposal_decisions",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("list_id", sa.Integer(), nullable=False),
        sa.Column("archive_code", sa.String(100), nullable=False),
        sa.Column("decision", sa.String(20), nullable=False),
        sa.Column("keep_years", sa.Integer(), nullable=True),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("user", sa.String(100), nullable=False),
        _when(),
    )
    op.create_index("ix_disposal_decisions_list_id", "disposal_decisions", ["list_id"])
    op.create_table(
        "tombstones",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("archive_code", sa.String(100), nullable=False),
        sa.Column("list_id", sa.Integer(), nullable=False),
        sa.Column("catalogue", sa.JSON(), nullable=False),
        sa.Column("decisions", sa.JSON(), nullable=False),
        sa.Column("approved_by", sa.String(100), nullable=False),
        sa.Column("approved_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("executed_by", sa.String(100), nullable=False),
        sa.Column("witness", sa.String(200), nullable=False),
        sa.Column("destroyed", sa.JSON(), nullable=False),
        sa.Column("destroyed_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("archive_code", "list_id", name="uq_tombstones_code_list"),
    )
    op.create_index("ix_tombstones_archive_code", "tombstones", ["archive_code"])


def _access_tables() -> None:
    op.create_table(
        "access_requests",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("user_id", sa.String(32), nullable=False),
        sa.Column("username", sa.String(100), nullable=False),
        sa.Column("archive_code", sa.String(100), nullable=False),
        sa.Column("purpose", sa.Text(), nullable=False),
        sa.Column("days", sa.Integer(), nullable=False),
        sa.Column("requested_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("decided_by", sa.String(100), nullable=True),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("decision_reason", sa.Text(), nullable=True),
        sa.Column("granted_until", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index("ix_access_requests_user_id", "access_requests", ["user_id"])
    op.create_table(
        "lookups",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        _when(),
        sa.Column("username", sa.String(100), nullable=False),
        sa.Column("user_id", sa.String(32), nullable=False),
        sa.Column("archive_code", sa.String(100), nullable=False),
        sa.Column("action", sa.String(20), nullable=False),
        sa.Column("via", sa.String(20), nullable=False),
        sa.Column("request_id", sa.Integer(), nullable=True),
    )
    op.create_index("ix_lookups_at", "lookups", ["at"])
    op.create_index("ix_lookups_archive_code", "lookups", ["archive_code"])


# Disposal lists move open -> approved -> executed and nothing else about them changes; their
# items, decisions (once made) and tombstones are never changed; none of them is ever deleted.
# ({ne}: the null-safe "differs", IS NOT in SQLite, IS DISTINCT FROM in PostgreSQL)
_LIST_CHANGE_REFUSED = (
    "OLD.status = 'executed' OR NEW.id {ne} OLD.id OR NEW.due_by {ne} OLD.due_by "
    "OR NEW.created_at {ne} OLD.created_at OR NEW.created_by {ne} OLD.created_by "
    "OR NOT ((OLD.status = 'open' AND NEW.status = 'approved') "
    "OR (OLD.status = 'approved' AND NEW.status = 'executed')) "
    "OR (OLD.status = 'approved' AND (NEW.approved_by {ne} OLD.approved_by "
    "OR NEW.approved_at {ne} OLD.approved_at))"
)


def _sqlite_guards() -> None:
    for table in _FROZEN:
        for event in ("UPDATE", "DELETE"):
            op.execute(
                f"CREATE TRIGGER {table}_no_{event.lower()} BEFORE {event} ON {table} "
                f"BEGIN SELECT RAISE(ABORT, '{table} rows are never changed or deleted'); END"
            )
    for table in _OPEN_ONLY:
        op.execute(
            f"CREATE TRIGGER {table}_open_list_only BEFORE INSERT ON {table} "
            "WHEN (SELECT status FROM disposal_lists WHERE id = NEW.list_id) IS NOT 'open' "
            "BEGIN SELECT RAISE(ABORT, 'the disposal list is not open'); END"
        )
    op.execute(
        "CREATE TRIGGER disposal_lists_no_delete BEFORE DELETE ON disposal_lists "
        "BEGIN SELECT RAISE(ABORT, 'disposal lists are never deleted'); END"
    )
    refused = _LIST_CHANGE_REFUSED.format(ne="IS NOT")
    op.execute(
        f"CREATE TRIGGER disposal_lists_guard BEFORE UPDATE ON disposal_lists WHEN {refused} "
        "BEGIN SELECT RAISE(ABORT, 'a disposal list only moves open -> approved -> executed'); END"
    )


def _postgresql_guards() -> None:
    op.execute(
        "CREATE FUNCTION capture_refuse_change() RETURNS trigger AS $$ BEGIN "
        "RAISE EXCEPTION '% rows are never changed or deleted', TG_TABLE_NAME; END; $$ LANGUAGE plpgsql"
    )
    op.execute(
        "CREATE FUNCTION capture_open_list_only() RETURNS trigger AS $$ BEGIN "
        "IF (SELECT status FROM disposal_lists WHERE id = NEW.list_id) IS DISTINCT FROM 'open' THEN "
        "RAISE EXCEPTION 'the disposal list is not open'; END IF; RETURN NEW; END; $$ LANGUAGE plpgsql"
    )
    op.execute(
        "CREATE FUNCTION capture_disposal_list_guard() RETURNS trigger AS $$ BEGIN "
        "IF TG_OP = 'DELETE' THEN RAISE EXCEPTION 'disposal lists are never deleted'; END IF; "
        f"IF {_LIST_CHANGE_REFUSED.format(ne='IS DISTINCT FROM')} THEN "
        "RAISE EXCEPTION 'a disposal list only moves open -> approved -> executed'; END IF; "
        "RETURN NEW; END; $$ LANGUAGE plpgsql"
    )
    for table in _FROZEN:
        op.execute(
            f"CREATE TRIGGER {table}_frozen BEFORE UPDATE OR DELETE ON {table} "
            "FOR EACH ROW EXECUTE FUNCTION capture_refuse_change()"
        )
    for table in (*_FROZEN, "disposal_lists"):
        op.execute(
            f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} "
            "FOR EACH STATEMENT EXECUTE FUNCTION capture_refuse_change()"
        )
    for table in _OPEN_ONLY:
        op.execute(
            f"CREATE TRIGGER {table}_open_list_only BEFORE INSERT ON {table} "
            "FOR EACH ROW EXECUTE FUNCTION capture_open_list_only()"
        )
    op.execute(
        "CREATE TRIGGER disposal_lists_guard BEFORE UPDATE OR DELETE ON disposal_lists "
        "FOR EACH ROW EXECUTE FUNCTION capture_disposal_list_guard()"
    )


def downgrade() -> None:
    for table in (
        "lookups",
        "access_requests",
        "tombstones",
        "disposal_decisions",
        "disposal_items",
        "disposal_lists",
        "replica_copies",
        "replicas",
        "package_baselines",
        "fixity_status",
        "fixity_results",
        "fixity_runs",
    ):
        op.drop_table(table)  # drops its indexes and triggers too
    if op.get_bind().dialect.name == "postgresql":
        for function in ("capture_refuse_change", "capture_open_list_only", "capture_disposal_list_guard"):
            op.execute(f"DROP FUNCTION {function}()")
    with op.batch_alter_table("catalogue") as batch:
        batch.drop_column("creation_date")
        batch.drop_column("contract_end_date")
