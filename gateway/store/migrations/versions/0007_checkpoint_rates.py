"""The notice budget planner's checkpoint speed per instance type (gateway/scheduler/
notice_budget.py): one row per provider and instance type, decayed least-squares sums as JSON.

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "checkpoint_rates",
        sa.Column("provider", sa.String(32), primary_key=True),
        sa.Column("instance_type", sa.String(64), primary_key=True),
        sa.Column("samples", sa.Integer, nullable=False),
        sa.Column("stats", sa.Text, nullable=False),
        sa.Column("updated_time", sa.String(40), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("checkpoint_rates")
