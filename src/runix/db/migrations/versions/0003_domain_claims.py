"""domains: claims instead of a lock on the name. Several projects may claim one name unverified; a partial
unique index lets at most one row per name be verified; unverified claims get an expiry.

Revision ID: 0003
Revises: 0002
"""

from collections.abc import Sequence
from datetime import timedelta

import sqlalchemy as sa
from alembic import op

from runix.db.models import UTCDateTime

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# 0001 left the unique constraint on domains.name unnamed: PostgreSQL named it domains_name_key, SQLite not at
# all. On SQLite the batch copy names it through this convention, so it can be dropped by that name.
UNNAMED_UNIQUE = {"uq": "uq_%(table_name)s_%(column_0_name)s"}
# The setting's default (RUNIX_DOMAIN_CLAIM_TTL_HOURS did not exist before this revision).
CLAIM_TTL = timedelta(hours=72)

domains = sa.table("domains", sa.column("id", sa.String), sa.column("verified", sa.Boolean),
                   sa.column("created_at", UTCDateTime()), sa.column("expires_at", UTCDateTime()))


def _name_unique_constraint() -> str:
    for constraint in sa.inspect(op.get_bind()).get_unique_constraints("domains"):
        if constraint["column_names"] == ["name"]:
            return constraint["name"] or "uq_domains_name"
    raise RuntimeError("domains has no unique constraint on name to drop")


def upgrade() -> None:
    name_unique = _name_unique_constraint()
    with op.batch_alter_table("domains", naming_convention=UNNAMED_UNIQUE) as batch_op:
        batch_op.drop_constraint(name_unique, type_="unique")
        batch_op.create_unique_constraint("uq_domains_project_id_name", ["project_id", "name"])
        batch_op.add_column(sa.Column("expires_at", UTCDateTime(timezone=True), nullable=True))
        batch_op.create_index("ix_domains_expires_at", ["expires_at"], unique=False)
    op.create_index("ux_domains_verified_name", "domains", ["name"], unique=True,
                    sqlite_where=sa.text("verified IS 1"), postgresql_where=sa.text("verified IS true"))
    # Claims made before this revision lapse as if the TTL had applied from the start: a squatter's old claim goes.
    bind = op.get_bind()
    for domain_id, created_at in bind.execute(sa.select(domains.c.id, domains.c.created_at)
                                              .where(domains.c.verified.is_(False))).all():
        bind.execute(domains.update().where(domains.c.id == domain_id).values(expires_at=created_at + CLAIM_TTL))


def downgrade() -> None:
    # Fails (IntegrityError) while several projects claim one name: remove the extra claims first.
    op.drop_index("ux_domains_verified_name", table_name="domains")
    with op.batch_alter_table("domains") as batch_op:
        batch_op.drop_index("ix_domains_expires_at")
        batch_op.drop_column("expires_at")
        batch_op.drop_constraint("uq_domains_project_id_name", type_="unique")
        batch_op.create_unique_constraint("uq_domains_name", ["name"])
