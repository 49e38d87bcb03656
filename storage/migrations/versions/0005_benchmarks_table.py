"""benchmarks: stored benchmark results move from a JSON index into the database; drop the
update_vectors table (never read or written)

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01

"""
from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = '0005'
down_revision: Union[str, Sequence[str], None] = '0004'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    op.create_table('benchmarks',
                    sa.Column('id', sa.Integer(), nullable=False),
                    sa.Column('name', sa.String(length=200), nullable=False),
                    sa.Column('artifact', sa.String(length=64), nullable=False),
                    sa.Column('n_rows', sa.Integer(), nullable=False),
                    sa.Column('skipped', sa.Integer(), nullable=False),
                    sa.Column('user_id', sa.Integer(), nullable=True),
                    sa.Column('created_at', sa.DateTime(), nullable=False),
                    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_benchmarks_user_id_users'),
                                            ondelete='SET NULL'),
                    sa.PrimaryKeyConstraint('id', name=op.f('pk_benchmarks')))
    with op.batch_alter_table('update_vectors', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_update_vectors_org_id'))
    op.drop_table('update_vectors')


def downgrade() -> None:
    op.create_table('update_vectors',
                    sa.Column('id', sa.Integer(), nullable=False),
                    sa.Column('org_id', sa.Integer(), nullable=False),
                    sa.Column('adapter_id', sa.Integer(), nullable=False),
                    sa.Column('model_pair_id', sa.Integer(), nullable=False),
                    sa.Column('artifact', sa.String(length=64), nullable=False),
                    sa.Column('meta', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'),
                              nullable=False),
                    sa.Column('created_at', sa.DateTime(), nullable=False),
                    sa.ForeignKeyConstraint(['adapter_id'], ['adapters.id'],
                                            name=op.f('fk_update_vectors_adapter_id_adapters'), ondelete='CASCADE'),
                    sa.ForeignKeyConstraint(['model_pair_id'], ['model_pairs.id'],
                                            name=op.f('fk_update_vectors_model_pair_id_model_pairs'),
                                            ondelete='RESTRICT'),
                    sa.ForeignKeyConstraint(['org_id'], ['organisations.id'],
                                            name=op.f('fk_update_vectors_org_id_organisations'), ondelete='RESTRICT'),
                    sa.PrimaryKeyConstraint('id', name=op.f('pk_update_vectors')))
    with op.batch_alter_table('update_vectors', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_update_vectors_org_id'), ['org_id'], unique=False)
    op.drop_table('benchmarks')
