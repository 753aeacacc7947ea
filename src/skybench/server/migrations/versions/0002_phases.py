"""Final entries chosen by teams and the leaderboard snapshots taken when a phase ends.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01
"""
import sqlalchemy as sa
from alembic import op

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('final_choices',
    sa.Column('team_id', sa.Integer(), nullable=False),
    sa.Column('track', sa.String(length=64), nullable=False),
    sa.Column('submission_id', sa.String(length=32), nullable=False),
    sa.Column('chosen_at', sa.DateTime(), nullable=False),
    sa.ForeignKeyConstraint(['submission_id'], ['submissions.id'], ),
    sa.ForeignKeyConstraint(['team_id'], ['teams.id'], ),
    sa.PrimaryKeyConstraint('team_id', 'track', 'submission_id')
    )
    op.create_table('leaderboard_snapshots',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('track', sa.String(length=64), nullable=False),
    sa.Column('phase', sa.String(length=16), nullable=False),
    sa.Column('taken_at', sa.DateTime(), nullable=False),
    sa.Column('rows', sa.JSON(), nullable=False),
    sa.Column('path', sa.Text(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('ix_snapshots_track_phase', 'leaderboard_snapshots', ['track', 'phase'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_snapshots_track_phase', table_name='leaderboard_snapshots')
    op.drop_table('leaderboard_snapshots')
    op.drop_table('final_choices')
