"""The Application Library: apps and registry credentials.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "apps",
        sa.Column("name", sa.String(128), primary_key=True),
        sa.Column("image", sa.Text, nullable=False),
        sa.Column("owner", sa.String(255), nullable=False, server_default=""),
        sa.Column("archive_sha256", sa.String(64), nullable=True),
        sa.Column("archive_size", sa.BigInteger, nullable=True),
        sa.Column("created_time", sa.String(40), nullable=False),
        sa.Column("updated_time", sa.String(40), nullable=False),
    )
    op.create_table(
        "registry_credentials",
        sa.Column("registry", sa.String(255), primary_key=True),
        sa.Column("username", sa.Text, nullable=False),
        sa.Column("password_encrypted", sa.Text, nullable=False),
        sa.Column("updated_time", sa.String(40), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("registry_credentials")
    op.drop_table("apps")
