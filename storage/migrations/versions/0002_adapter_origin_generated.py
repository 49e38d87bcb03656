"""adapters.origin may be 'generated' (LLM adapters made by a generate job)

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27

"""
from typing import Sequence, Union

from alembic import op

revision: str = '0002'
down_revision: Union[str, Sequence[str], None] = '0001'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    with op.batch_alter_table('adapters', schema=None) as batch_op:
        batch_op.drop_constraint(op.f('ck_adapters_origin_valid'), type_='check')
        batch_op.create_check_constraint(op.f('ck_adapters_origin_valid'),
                                         "origin IN ('uploaded', 'produced', 'generated')")


def downgrade() -> None:
    op.execute("DELETE FROM adapters WHERE origin = 'generated'")
    with op.batch_alter_table('adapters', schema=None) as batch_op:
        batch_op.drop_constraint(op.f('ck_adapters_origin_valid'), type_='check')
        batch_op.create_check_constraint(op.f('ck_adapters_origin_valid'), "origin IN ('uploaded', 'produced')")
