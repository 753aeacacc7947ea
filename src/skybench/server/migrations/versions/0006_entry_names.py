"""The track of each entry name of a team, one row per (team, name): two uploads of one new name to two tracks
racing each other can no longer both be queued. Filled from the submissions that were queued (a sha256); a
name an older server let onto two tracks keeps the track of its first upload.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02
"""
import sqlalchemy as sa
from alembic import op

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('entry_names',
    sa.Column('team_id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('track', sa.String(length=64), nullable=False),
    sa.ForeignKeyConstraint(['team_id'], ['teams.id'], ),
    sa.PrimaryKeyConstraint('team_id', 'name')
    )
    op.execute("INSERT INTO entry_names (team_id, name, track) "
               "SELECT s.team_id, s.name, MIN(s.track) FROM submissions s WHERE s.sha256 IS NOT NULL "
               "AND s.received_at = (SELECT MIN(f.received_at) FROM submissions f WHERE f.team_id = s.team_id "
               "AND f.name = s.name AND f.sha256 IS NOT NULL) GROUP BY s.team_id, s.name")


def downgrade() -> None:
    op.drop_table('entry_names')
