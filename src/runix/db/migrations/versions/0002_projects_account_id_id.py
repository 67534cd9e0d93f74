"""projects: index (account_id, id) so a page of an account's projects, newest first, is an index range scan

Revision ID: 0002
Revises: 0001
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_projects_account_id_id", "projects", ["account_id", "id"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_projects_account_id_id", table_name="projects")
