"""Team names unique whatever their case: a unique index on lower(name), so the check in `add_team` cannot be
raced by two requests at once. A database that already holds two teams differing only in case fails here with
the database's own message: rename one (`UPDATE teams SET name = ...`) and start the server again.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-03
"""
import sqlalchemy as sa
from alembic import op

revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index('uq_teams_name_lower', 'teams', [sa.text('lower(name)')], unique=True)


def downgrade() -> None:
    op.drop_index('uq_teams_name_lower', table_name='teams')
