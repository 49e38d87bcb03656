"""datasets.no_dp_required: an organisation's explicit, recorded choice that a budgeted dataset
may be trained on without DP (the privacy ledger then shows ε = ∞ for such a job)

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01

"""
from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op

revision: str = '0006'
down_revision: Union[str, Sequence[str], None] = '0005'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    with op.batch_alter_table('datasets', schema=None) as batch_op:
        batch_op.add_column(sa.Column('no_dp_required', sa.Boolean(), nullable=False, server_default=sa.text('false')))
        batch_op.add_column(sa.Column('no_dp_marked_by', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('no_dp_marked_at', sa.DateTime(), nullable=True))
        batch_op.create_foreign_key(batch_op.f('fk_datasets_no_dp_marked_by_users'), 'users', ['no_dp_marked_by'],
                                    ['id'], ondelete='SET NULL')


def downgrade() -> None:
    with op.batch_alter_table('datasets', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('fk_datasets_no_dp_marked_by_users'), type_='foreignkey')
        batch_op.drop_column('no_dp_marked_at')
        batch_op.drop_column('no_dp_marked_by')
        batch_op.drop_column('no_dp_required')
