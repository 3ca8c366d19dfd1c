"""portal: one-time sign-in codes, portal sessions, guardian links

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-01 12:00:00.000000

Written by hand (issue 8): only the patient portal's tables.
"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa

import crm_store.models

revision: str = '0010'
down_revision: Union[str, Sequence[str], None] = '0009'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

UTC = crm_store.models.UTCDateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        'portal_codes',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('phone', sa.String(length=20), nullable=False),
        sa.Column('code_hash', sa.String(length=200), nullable=False),
        sa.Column('status', sa.String(length=12), nullable=False),
        sa.Column('attempts', sa.Integer(), nullable=False),
        sa.Column('created_at', UTC, nullable=False),
        sa.Column('expires_at', UTC, nullable=False),
        sa.Column('finished_at', UTC, nullable=True),
        sa.Column('message_id', sa.Integer(), nullable=True),
        sa.Column('redacted_at', UTC, nullable=True),
        sa.Column('remote', sa.String(length=64), nullable=True),
        sa.ForeignKeyConstraint(['message_id'], ['messages.id'], name=op.f('fk_portal_codes_message_id_messages')),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_portal_codes')),
    )
    op.create_index('ix_portal_codes_phone', 'portal_codes', ['phone', 'created_at'], unique=False)

    op.create_table(
        'portal_sessions',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('token_hash', sa.String(length=64), nullable=False),
        sa.Column('patient_id', sa.Integer(), nullable=False),
        sa.Column('acting_patient_id', sa.Integer(), nullable=False),
        sa.Column('csrf_token', sa.String(length=64), nullable=False),
        sa.Column('language', sa.String(length=5), nullable=False),
        sa.Column('created_at', UTC, nullable=False),
        sa.Column('last_seen_at', UTC, nullable=False),
        sa.Column('ended_at', UTC, nullable=True),
        sa.ForeignKeyConstraint(['patient_id'], ['patients.id'], name=op.f('fk_portal_sessions_patient_id_patients')),
        sa.ForeignKeyConstraint(['acting_patient_id'], ['patients.id'],
                                name=op.f('fk_portal_sessions_acting_patient_id_patients')),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_portal_sessions')),
        sa.UniqueConstraint('token_hash', name=op.f('uq_portal_sessions_token_hash')),
    )
    op.create_index(op.f('ix_portal_sessions_patient_id'), 'portal_sessions', ['patient_id'], unique=False)

    op.create_table(
        'guardian_links',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('guardian_id', sa.Integer(), nullable=False),
        sa.Column('child_id', sa.Integer(), nullable=False),
        sa.Column('relationship', sa.String(length=40), nullable=False),
        sa.Column('source', sa.String(length=100), nullable=False),
        sa.Column('created_at', UTC, nullable=False),
        sa.Column('ended_at', UTC, nullable=True),
        sa.ForeignKeyConstraint(['guardian_id'], ['patients.id'], name=op.f('fk_guardian_links_guardian_id_patients')),
        sa.ForeignKeyConstraint(['child_id'], ['patients.id'], name=op.f('fk_guardian_links_child_id_patients')),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_guardian_links')),
        sa.UniqueConstraint('guardian_id', 'child_id', name=op.f('uq_guardian_links_guardian_id')),
    )
    op.create_index(op.f('ix_guardian_links_guardian_id'), 'guardian_links', ['guardian_id'], unique=False)
    op.create_index(op.f('ix_guardian_links_child_id'), 'guardian_links', ['child_id'], unique=False)


def downgrade() -> None:
    op.drop_index(op.f('ix_guardian_links_child_id'), table_name='guardian_links')
    op.drop_index(op.f('ix_guardian_links_guardian_id'), table_name='guardian_links')
    op.drop_table('guardian_links')
    op.drop_index(op.f('ix_portal_sessions_patient_id'), table_name='portal_sessions')
    op.drop_table('portal_sessions')
    op.drop_index('ix_portal_codes_phone', table_name='portal_codes')
    op.drop_table('portal_codes')
