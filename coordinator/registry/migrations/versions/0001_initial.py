"""The registry's first schema: stores, commands, erasures, models, rollouts, runs, audit.

Revision ID: 0001
Revises:
Create Date: 2025-01-01

Written by hand to match ``coordinator/registry/schema.py``; the tests compare the two.
Constraint names follow the schema's naming convention so later SQLite batch migrations
can find them.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _time(name: str, nullable: bool = False) -> sa.Column[object]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "stores",
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("public_key_pem", sa.Text(), nullable=False),
        sa.Column("certificate_sha256", sa.String(64), nullable=False),
        _time("registered_at"),
        _time("revoked_at", nullable=True),
        _time("last_seen", nullable=True),
        sa.Column("last_health", sa.JSON(), nullable=True),
        sa.Column("model_version", sa.Integer(), nullable=True),
        sa.PrimaryKeyConstraint("name", name="pk_stores"),
    )
    op.create_table(
        "erasure_requests",
        sa.Column("request_id", sa.String(36), nullable=False),
        sa.Column("member_id", sa.String(200), nullable=False),
        _time("requested_at"),
        sa.Column("requested_by", sa.String(128), nullable=False),
        _time("completed_at", nullable=True),
        sa.PrimaryKeyConstraint("request_id", name="pk_erasure_requests"),
    )
    op.create_index(
        "ix_erasure_requests_requested_at", "erasure_requests", ["requested_at"], unique=False
    )
    op.create_table(
        "commands",
        sa.Column("id", _ID, autoincrement=True, nullable=False),
        sa.Column("command_id", sa.String(36), nullable=False),
        sa.Column("store", sa.String(128), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        _time("issued_at"),
        sa.Column("erasure_request_id", sa.String(36), nullable=True),
        _time("acknowledged_at", nullable=True),
        sa.Column("outcome", sa.String(64), nullable=True),
        sa.Column("receipt_body", sa.LargeBinary(), nullable=True),
        sa.Column("receipt_signature", sa.LargeBinary(), nullable=True),
        sa.Column("receipt_verified", sa.Boolean(), nullable=False),
        sa.CheckConstraint("kind IN ('erase-member', 'adopt-model')", name="ck_commands_kind"),
        sa.ForeignKeyConstraint(["store"], ["stores.name"], name="fk_commands_store_stores"),
        sa.ForeignKeyConstraint(
            ["erasure_request_id"],
            ["erasure_requests.request_id"],
            name="fk_commands_erasure_request_id_erasure_requests",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_commands"),
        sa.UniqueConstraint("command_id", name="uq_commands_command_id"),
    )
    op.create_index(
        "ix_commands_erasure_request_id", "commands", ["erasure_request_id"], unique=False
    )
    op.create_index(
        "ix_commands_pending",
        "commands",
        ["store", "id"],
        unique=False,
        postgresql_where=sa.text("acknowledged_at IS NULL"),
        sqlite_where=sa.text("acknowledged_at IS NULL"),
    )
    op.create_table(
        "training_runs",
        sa.Column("run_id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("rounds_planned", sa.Integer(), nullable=False),
        _time("started_at"),
        _time("finished_at", nullable=True),
        sa.Column("model_version", sa.Integer(), nullable=True),
        sa.Column("message", sa.Text(), nullable=False),
        sa.CheckConstraint(
            "status IN ('running', 'completed', 'failed')", name="ck_training_runs_status"
        ),
        sa.PrimaryKeyConstraint("run_id", name="pk_training_runs"),
    )
    op.create_table(
        "training_rounds",
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("round", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("metrics", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(
            ["run_id"], ["training_runs.run_id"], name="fk_training_rounds_run_id_training_runs"
        ),
        sa.PrimaryKeyConstraint("run_id", "round", name="pk_training_rounds"),
    )
    op.create_table(
        "model_versions",
        sa.Column("version", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        sa.Column("file_name", sa.String(255), nullable=False),
        sa.Column("manifest_json", sa.Text(), nullable=False),
        sa.Column("signature_verified", sa.Boolean(), nullable=False),
        sa.Column("signing_key_id", sa.String(200), nullable=True),
        _time("created_at"),
        sa.Column("run_id", sa.Integer(), nullable=True),
        sa.CheckConstraint("version >= 1", name="ck_model_versions_version_positive"),
        sa.ForeignKeyConstraint(
            ["run_id"], ["training_runs.run_id"], name="fk_model_versions_run_id_training_runs"
        ),
        sa.PrimaryKeyConstraint("version", name="pk_model_versions"),
    )
    op.create_table(
        "rollouts",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("previous_version", sa.Integer(), nullable=False),
        _time("promoted_at"),
        sa.Column("promoted_by", sa.String(128), nullable=False),
        sa.Column("stores_commanded", sa.Integer(), nullable=False),
        _time("rolled_back_at", nullable=True),
        sa.CheckConstraint("kind IN ('promote', 'rollback')", name="ck_rollouts_kind"),
        sa.PrimaryKeyConstraint("id", name="pk_rollouts"),
    )
    op.create_table(
        "audit_log",
        sa.Column("id", _ID, autoincrement=True, nullable=False),
        _time("at"),
        sa.Column("actor", sa.String(128), nullable=False),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("subject", sa.String(300), nullable=False),
        sa.Column("details", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_audit_log"),
    )
    op.create_index("ix_audit_log_action_id", "audit_log", ["action", "id"], unique=False)


def downgrade() -> None:
    # Only for developing a revision; the coordinator itself never downgrades.
    op.drop_table("audit_log")
    op.drop_table("rollouts")
    op.drop_table("model_versions")
    op.drop_table("training_rounds")
    op.drop_table("training_runs")
    op.drop_index("ix_commands_pending", table_name="commands")
    op.drop_index("ix_commands_erasure_request_id", table_name="commands")
    op.drop_table("commands")
    op.drop_index("ix_erasure_requests_requested_at", table_name="erasure_requests")
    op.drop_table("erasure_requests")
    op.drop_table("stores")
