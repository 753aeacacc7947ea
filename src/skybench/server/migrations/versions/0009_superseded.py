"""The ``superseded`` state and its time: a job that a newer version of its entry replaced before it was recorded
(a retry after the newer version finished, say) is not run, and says so, instead of being evaluated and ranked
over the newer version.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-04
"""
import sqlalchemy as sa
from alembic import op

revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('submissions', schema=None) as batch_op:
        batch_op.add_column(sa.Column('superseded_at', sa.DateTime(), nullable=True))


def downgrade() -> None:
    op.execute("UPDATE submissions SET state = 'failed', failed_at = superseded_at WHERE state = 'superseded'")
    with op.batch_alter_table('submissions', schema=None) as batch_op:
        batch_op.drop_column('superseded_at')
