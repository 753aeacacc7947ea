"""One leaderboard snapshot per track and phase (a unique index): two servers or workers noticing the same
phase end at once store it once. Duplicates an older server stored are removed, keeping the first taken.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01
"""
from alembic import op

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("DELETE FROM leaderboard_snapshots WHERE id NOT IN "
               "(SELECT MIN(id) FROM leaderboard_snapshots GROUP BY track, phase)")
    op.drop_index('ix_snapshots_track_phase', table_name='leaderboard_snapshots')
    op.create_index('uq_snapshots_track_phase', 'leaderboard_snapshots', ['track', 'phase'], unique=True)


def downgrade() -> None:
    op.drop_index('uq_snapshots_track_phase', table_name='leaderboard_snapshots')
    op.create_index('ix_snapshots_track_phase', 'leaderboard_snapshots', ['track', 'phase'], unique=False)
