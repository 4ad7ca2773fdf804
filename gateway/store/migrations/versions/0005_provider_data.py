"""What a provider returned at launch, kept on the instance row: its id for the machine and the
data it needs to find, query and terminate it again after a gateway restart.

Revision ID: 0005
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("instances") as batch:
        batch.add_column(sa.Column("provider_id", sa.String(128), nullable=True))
        batch.add_column(sa.Column("provider_data", sa.Text, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("instances") as batch:
        batch.drop_column("provider_data")
        batch.drop_column("provider_id")
