"""The Ladder's verdicts, one row per finished open-phase submission, written once when first decided (a
recomputed history could change a verdict a team has already seen). Empty at first: a server that showed
verdicts before this revision decides them again once, in finishing order.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-03
"""
import sqlalchemy as sa
from alembic import op

revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('ladder_rungs',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('submission_id', sa.String(length=32), nullable=False),
    sa.Column('track', sa.String(length=64), nullable=False),
    sa.Column('leader', sa.Boolean(), nullable=False),
    sa.Column('leader_id', sa.String(length=32), nullable=True),
    sa.Column('score', sa.Float(), nullable=True),
    sa.Column('decided_at', sa.DateTime(), nullable=False),
    sa.ForeignKeyConstraint(['submission_id'], ['submissions.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('submission_id')
    )
    op.create_index('ix_ladder_rungs_track', 'ladder_rungs', ['track'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_ladder_rungs_track', table_name='ladder_rungs')
    op.drop_table('ladder_rungs')
