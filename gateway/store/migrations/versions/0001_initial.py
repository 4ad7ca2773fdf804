"""Initial schema: tasks, task_tags, instances, attempts, capsules, events.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

Seq = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Name = sa.Text().with_variant(sa.Text(collation="C"), "postgresql")


def upgrade() -> None:
    op.create_table(
        "tasks",
        sa.Column("seq", Seq, primary_key=True, autoincrement=True),
        sa.Column("id", sa.String(64), nullable=False, unique=True),
        sa.Column("owner", sa.String(255), nullable=False, server_default=""),
        sa.Column("name", Name, nullable=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("creation_time", sa.String(40), nullable=False),
        sa.Column("updated_time", sa.String(40), nullable=False),
        sa.Column("spec", sa.Text, nullable=False),
        sa.Column("logs", sa.Text, nullable=True),
        sa.Column("version", sa.Integer, nullable=False, server_default="0"),
    )
    op.create_index("ix_tasks_owner_seq", "tasks", ["owner", "seq"])
    op.create_index("ix_tasks_state_seq", "tasks", ["state", "seq"])
    op.create_index("ix_tasks_owner_state_seq", "tasks", ["owner", "state", "seq"])
    op.create_index("ix_tasks_name_seq", "tasks", ["name", "seq"])

    op.create_table(
        "task_tags",
        sa.Column(
            "task_seq", Seq, sa.ForeignKey("tasks.seq", ondelete="CASCADE"), primary_key=True
        ),
        sa.Column("key", sa.String(255), primary_key=True),
        sa.Column("value", sa.Text, nullable=False),
    )
    op.create_index("ix_task_tags_key_value_seq", "task_tags", ["key", "value", "task_seq"])

    op.create_table(
        "instances",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("provider", sa.String(32), nullable=False),
        sa.Column("instance_type", sa.String(64), nullable=False),
        sa.Column("market", sa.String(16), nullable=False),
        sa.Column("zone", sa.String(64), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("price_per_hour", sa.Float, nullable=True),
        sa.Column("token_sha256", sa.String(64), nullable=True),
        sa.Column("created_time", sa.String(40), nullable=False),
        sa.Column("updated_time", sa.String(40), nullable=False),
        sa.Column("last_heartbeat", sa.String(40), nullable=True),
        sa.Column("data", sa.Text, nullable=True),
    )
    op.create_index("ix_instances_state", "instances", ["state"])

    op.create_table(
        "attempts",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column(
            "task_id", sa.String(64), sa.ForeignKey("tasks.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("number", sa.Integer, nullable=False),
        sa.Column("instance_id", sa.String(64), sa.ForeignKey("instances.id"), nullable=True),
        sa.Column("phase", sa.String(16), nullable=False),
        sa.Column("reason", sa.String(32), nullable=True),
        sa.Column("market", sa.String(16), nullable=True),
        sa.Column("instance_type", sa.String(64), nullable=True),
        sa.Column("zone", sa.String(64), nullable=True),
        sa.Column("price_per_hour", sa.Float, nullable=True),
        sa.Column("start_time", sa.String(40), nullable=True),
        sa.Column("end_time", sa.String(40), nullable=True),
        sa.Column("data", sa.Text, nullable=True),
    )
    op.create_index("ix_attempts_task_number", "attempts", ["task_id", "number"], unique=True)
    op.create_index("ix_attempts_instance", "attempts", ["instance_id"])

    op.create_table(
        "capsules",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column(
            "task_id", sa.String(64), sa.ForeignKey("tasks.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("attempt_id", sa.String(64), sa.ForeignKey("attempts.id"), nullable=True),
        sa.Column("sequence", sa.Integer, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("store_key", sa.Text, nullable=False),
        sa.Column("size_bytes", sa.BigInteger, nullable=True),
        sa.Column("manifest_sha256", sa.String(64), nullable=True),
        sa.Column("parent_id", sa.String(64), nullable=True),
        sa.Column("created_time", sa.String(40), nullable=False),
        sa.Column("data", sa.Text, nullable=True),
    )
    op.create_index("ix_capsules_task_sequence", "capsules", ["task_id", "sequence"])

    op.create_table(
        "events",
        sa.Column("id", Seq, primary_key=True, autoincrement=True),
        sa.Column("task_id", sa.String(64), nullable=True),
        sa.Column("attempt_id", sa.String(64), nullable=True),
        sa.Column("instance_id", sa.String(64), nullable=True),
        sa.Column("time", sa.String(40), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("from_state", sa.String(16), nullable=True),
        sa.Column("to_state", sa.String(16), nullable=True),
        sa.Column("phase", sa.String(16), nullable=True),
        sa.Column("message", sa.Text, nullable=True),
        sa.Column("data", sa.Text, nullable=True),
    )
    op.create_index("ix_events_task_id", "events", ["task_id", "id"])
    op.create_index("ix_events_instance_id", "events", ["instance_id", "id"])


def downgrade() -> None:
    for table in ("events", "capsules", "attempts", "instances", "task_tags", "tasks"):
        op.drop_table(table)
