"""collaborations, their members (consent, contribution) and an audit log

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01

"""
from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op

from sqlalchemy.dialects import postgresql

revision: str = '0007'
down_revision: Union[str, Sequence[str], None] = '0006'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    op.create_table(
        'collaborations',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('name', sa.String(length=200), nullable=False),
        sa.Column('model_pair_id', sa.Integer(), nullable=False),
        sa.Column('mapper_id', sa.Integer(), nullable=True),
        sa.Column('organisation', sa.String(length=32), nullable=False),
        sa.Column('method', sa.String(length=32), nullable=False),
        sa.Column('weighting', sa.String(length=32), nullable=False),
        sa.Column('created_by_org', sa.Integer(), nullable=False),
        sa.Column('created_by_user', sa.Integer(), nullable=True),
        sa.Column('status', sa.String(length=16), nullable=False),
        sa.Column('job_id', sa.Integer(), nullable=True),
        sa.Column('result', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
        sa.Column('created_at', sa.DateTime(), nullable=False),
        sa.CheckConstraint("status IN ('open', 'running', 'done', 'failed')", name=op.f('ck_collaborations_status_valid')),
        sa.ForeignKeyConstraint(['model_pair_id'], ['model_pairs.id'], name=op.f('fk_collaborations_model_pair_id_model_pairs'), ondelete='RESTRICT'),
        sa.ForeignKeyConstraint(['mapper_id'], ['mapper_versions.id'], name=op.f('fk_collaborations_mapper_id_mapper_versions'), ondelete='SET NULL'),
        sa.ForeignKeyConstraint(['created_by_org'], ['organisations.id'], name=op.f('fk_collaborations_created_by_org_organisations'), ondelete='RESTRICT'),
        sa.ForeignKeyConstraint(['created_by_user'], ['users.id'], name=op.f('fk_collaborations_created_by_user_users'), ondelete='SET NULL'),
        sa.ForeignKeyConstraint(['job_id'], ['jobs.id'], name=op.f('fk_collaborations_job_id_jobs'), ondelete='SET NULL'),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_collaborations')))
    op.create_index(op.f('ix_collaborations_created_by_org'), 'collaborations', ['created_by_org'], unique=False)
    op.create_table(
        'collaboration_members',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('collaboration_id', sa.Integer(), nullable=False),
        sa.Column('org_id', sa.Integer(), nullable=False),
        sa.Column('state', sa.String(length=16), nullable=False),
        sa.Column('adapter_id', sa.Integer(), nullable=True),
        sa.Column('weight', sa.Float(), nullable=True),
        sa.Column('result_adapter_id', sa.Integer(), nullable=True),
        sa.Column('updated_at', sa.DateTime(), nullable=False),
        sa.CheckConstraint("state IN ('invited', 'accepted', 'declined', 'withdrawn')", name=op.f('ck_collaboration_members_state_valid')),
        sa.ForeignKeyConstraint(['collaboration_id'], ['collaborations.id'], name=op.f('fk_collaboration_members_collaboration_id_collaborations'), ondelete='CASCADE'),
        sa.ForeignKeyConstraint(['org_id'], ['organisations.id'], name=op.f('fk_collaboration_members_org_id_organisations'), ondelete='RESTRICT'),
        sa.ForeignKeyConstraint(['adapter_id'], ['adapters.id'], name=op.f('fk_collaboration_members_adapter_id_adapters'), ondelete='SET NULL'),
        sa.ForeignKeyConstraint(['result_adapter_id'], ['adapters.id'], name=op.f('fk_collaboration_members_result_adapter_id_adapters'), ondelete='SET NULL'),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_collaboration_members')),
        sa.UniqueConstraint('collaboration_id', 'org_id', name=op.f('uq_collaboration_members_collaboration_id')))
    op.create_index(op.f('ix_collaboration_members_collaboration_id'), 'collaboration_members', ['collaboration_id'], unique=False)
    op.create_index(op.f('ix_collaboration_members_org_id'), 'collaboration_members', ['org_id'], unique=False)
    op.create_table(
        'collaboration_events',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('collaboration_id', sa.Integer(), nullable=False),
        sa.Column('org_id', sa.Integer(), nullable=True),
        sa.Column('user_id', sa.Integer(), nullable=True),
        sa.Column('action', sa.String(length=50), nullable=False),
        sa.Column('detail', sa.Text(), nullable=False),
        sa.Column('at', sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(['collaboration_id'], ['collaborations.id'], name=op.f('fk_collaboration_events_collaboration_id_collaborations'), ondelete='CASCADE'),
        sa.ForeignKeyConstraint(['org_id'], ['organisations.id'], name=op.f('fk_collaboration_events_org_id_organisations'), ondelete='SET NULL'),
        sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_collaboration_events_user_id_users'), ondelete='SET NULL'),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_collaboration_events')))
    op.create_index(op.f('ix_collaboration_events_collaboration_id'), 'collaboration_events', ['collaboration_id'], unique=False)


def downgrade() -> None:
    op.drop_index(op.f('ix_collaboration_events_collaboration_id'), table_name='collaboration_events')
    op.drop_table('collaboration_events')
    op.drop_index(op.f('ix_collaboration_members_org_id'), table_name='collaboration_members')
    op.drop_index(op.f('ix_collaboration_members_collaboration_id'), table_name='collaboration_members')
    op.drop_table('collaboration_members')
    op.drop_index(op.f('ix_collaborations_created_by_org'), table_name='collaborations')
    op.drop_table('collaborations')
