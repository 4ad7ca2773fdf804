"""Indexes for the dashboard's system and costs pages, the status API and /metrics at 100,000
tasks: events by kind (checkpoint/restore outcomes, queue latency and the metrics read the
newest events of a few kinds), attempts by end time (what ran in a window, what still runs) and
by phase (the live attempts). Without them each of those reads scanned its whole table.

Revision ID: 0006
Revises: 0003
"""

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_events_kind_id", "events", ["kind", "id"])
    op.create_index("ix_attempts_end_time", "attempts", ["end_time"])
    op.create_index("ix_attempts_phase", "attempts", ["phase"])


def downgrade() -> None:
    op.drop_index("ix_attempts_phase", table_name="attempts")
    op.drop_index("ix_attempts_end_time", table_name="attempts")
    op.drop_index("ix_events_kind_id", table_name="events")
