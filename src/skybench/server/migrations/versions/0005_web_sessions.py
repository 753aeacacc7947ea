"""Web sessions kept by the server: log-out deletes the row, so a copied session cookie stops working too.
Cookies issued before this revision carry no session id: their teams log in again.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02
"""
import sqlalchemy as sa
from alembic import op

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('web_sessions',
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('team_id', sa.Integer(), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.ForeignKeyConstraint(['team_id'], ['teams.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('ix_web_sessions_team_id', 'web_sessions', ['team_id'], unique=False)
    op.create_index('ix_web_sessions_created_at', 'web_sessions', ['created_at'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_web_sessions_created_at', table_name='web_sessions')
    op.drop_index('ix_web_sessions_team_id', table_name='web_sessions')
    op.drop_table('web_sessions')
