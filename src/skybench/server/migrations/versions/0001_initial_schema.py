"""The initial schema: teams, submissions (the queue), phase overrides, quota use.

Revision ID: 0001
Revises: (none)
Create Date: 2026-12-01
"""
import sqlalchemy as sa
from alembic import op

revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:

    op.create_table('phase_state',
    sa.Column('track', sa.String(length=64), nullable=False),
    sa.Column('phase', sa.String(length=16), nullable=False),
    sa.Column('changed_at', sa.DateTime(), nullable=False),
    sa.Column('changed_by', sa.String(length=64), nullable=False),
    sa.PrimaryKeyConstraint('track')
    )
    op.create_table('teams',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('members', sa.JSON(), nullable=False),
    sa.Column('token_id', sa.String(length=32), nullable=False),
    sa.Column('token_hash', sa.String(length=256), nullable=False),
    sa.Column('is_admin', sa.Boolean(), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('name'),
    sa.UniqueConstraint('token_id')
    )
    op.create_table('quota_use',
    sa.Column('team_id', sa.Integer(), nullable=False),
    sa.Column('track', sa.String(length=64), nullable=False),
    sa.Column('period', sa.String(length=32), nullable=False),
    sa.Column('used', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['team_id'], ['teams.id'], ),
    sa.PrimaryKeyConstraint('team_id', 'track', 'period')
    )
    op.create_table('submissions',
    sa.Column('id', sa.String(length=32), nullable=False),
    sa.Column('team_id', sa.Integer(), nullable=False),
    sa.Column('track', sa.String(length=64), nullable=False),
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('sha256', sa.String(length=64), nullable=False),
    sa.Column('phase', sa.String(length=16), nullable=False),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('received_at', sa.DateTime(), nullable=False),
    sa.Column('queued_at', sa.DateTime(), nullable=True),
    sa.Column('running_at', sa.DateTime(), nullable=True),
    sa.Column('finished_at', sa.DateTime(), nullable=True),
    sa.Column('failed_at', sa.DateTime(), nullable=True),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.Column('log', sa.Text(), nullable=False),
    sa.Column('metrics', sa.JSON(), nullable=False),
    sa.Column('attempt', sa.Integer(), nullable=False),
    sa.Column('lease_owner', sa.String(length=128), nullable=True),
    sa.Column('lease_expires', sa.DateTime(), nullable=True),
    sa.Column('counted', sa.Boolean(), nullable=False),
    sa.Column('quota_day', sa.String(length=10), nullable=True),
    sa.ForeignKeyConstraint(['team_id'], ['teams.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('submissions', schema=None) as batch_op:
        batch_op.create_index('ix_submissions_state_queued', ['state', 'queued_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_submissions_team_id'), ['team_id'], unique=False)
        batch_op.create_index('ix_submissions_team_track', ['team_id', 'track'], unique=False)



def downgrade() -> None:

    with op.batch_alter_table('submissions', schema=None) as batch_op:
        batch_op.drop_index('ix_submissions_team_track')
        batch_op.drop_index(batch_op.f('ix_submissions_team_id'))
        batch_op.drop_index('ix_submissions_state_queued')

    op.drop_table('submissions')
    op.drop_table('quota_use')
    op.drop_table('teams')
    op.drop_table('phase_state')
