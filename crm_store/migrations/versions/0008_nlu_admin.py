"""nlu admin: training-data change log, review queue outcomes, models, training jobs, activations

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01 10:00:00.000000

Written by hand (issue 9): only the NLU administration tables.
"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa

import crm_store.models

revision: str = '0008'
down_revision: Union[str, Sequence[str], None] = '0007'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

UTC = crm_store.models.UTCDateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        'nlu_changes',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('at', UTC, nullable=False),
        sa.Column('user_id', sa.Integer(), nullable=True),
        sa.Column('username', sa.String(length=64), nullable=False),
        sa.Column('action', sa.String(length=10), nullable=False),
        sa.Column('language', sa.String(length=5), nullable=False),
        sa.Column('intent', sa.String(length=80), nullable=False),
        sa.Column('new_intent', sa.String(length=80), nullable=True),
        sa.Column('before', sa.Text(), nullable=True),
        sa.Column('after', sa.Text(), nullable=True),
        sa.Column('source', sa.String(length=40), nullable=False),
        sa.ForeignKeyConstraint(['user_id'], ['staff_users.id'], name=op.f('fk_nlu_changes_user_id_staff_users')),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_nlu_changes')),
    )
    op.create_index(op.f('ix_nlu_changes_at'), 'nlu_changes', ['at'], unique=False)
    op.create_index(op.f('ix_nlu_changes_intent'), 'nlu_changes', ['intent'], unique=False)

    op.create_table(
        'nlu_reviews',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('message_id', sa.Integer(), nullable=False),
        sa.Column('outcome', sa.String(length=10), nullable=False),
        sa.Column('intent', sa.String(length=80), nullable=True),
        sa.Column('example', sa.Text(), nullable=True),
        sa.Column('language', sa.String(length=5), nullable=True),
        sa.Column('username', sa.String(length=64), nullable=False),
        sa.Column('at', UTC, nullable=False),
        sa.ForeignKeyConstraint(['message_id'], ['messages.id'], name=op.f('fk_nlu_reviews_message_id_messages')),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_nlu_reviews')),
        sa.UniqueConstraint('message_id', name=op.f('uq_nlu_reviews_message_id')),
    )

    op.create_table(
        'nlu_models',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('file', sa.String(length=255), nullable=False),
        sa.Column('sha256', sa.String(length=64), nullable=False),
        sa.Column('size', sa.Integer(), nullable=False),
        sa.Column('source', sa.String(length=10), nullable=False),
        sa.Column('fingerprint', sa.String(length=64), nullable=True),
        sa.Column('created_by', sa.String(length=64), nullable=True),
        sa.Column('created_at', UTC, nullable=False),
        sa.Column('summary', sa.JSON(), nullable=True),
        sa.Column('file_deleted_at', UTC, nullable=True),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_nlu_models')),
        sa.UniqueConstraint('file', name=op.f('uq_nlu_models_file')),
    )
    op.create_index(op.f('ix_nlu_models_sha256'), 'nlu_models', ['sha256'], unique=False)

    op.create_table(
        'nlu_training_jobs',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('status', sa.String(length=12), nullable=False),
        sa.Column('stage', sa.String(length=40), nullable=False),
        sa.Column('progress', sa.Float(), nullable=False),
        sa.Column('detail', sa.String(length=200), nullable=True),
        sa.Column('started_by', sa.String(length=64), nullable=False),
        sa.Column('started_at', UTC, nullable=False),
        sa.Column('heartbeat_at', UTC, nullable=False),
        sa.Column('finished_at', UTC, nullable=True),
        sa.Column('fingerprint', sa.String(length=64), nullable=True),
        sa.Column('model_id', sa.Integer(), nullable=True),
        sa.Column('compared_model_id', sa.Integer(), nullable=True),
        sa.Column('evaluation', sa.JSON(), nullable=True),
        sa.Column('error', sa.Text(), nullable=True),
        sa.Column('log_tail', sa.Text(), nullable=True),
        sa.Column('running', sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(['model_id'], ['nlu_models.id'], name=op.f('fk_nlu_training_jobs_model_id_nlu_models')),
        sa.ForeignKeyConstraint(['compared_model_id'], ['nlu_models.id'],
                                name=op.f('fk_nlu_training_jobs_compared_model_id_nlu_models')),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_nlu_training_jobs')),
        sa.UniqueConstraint('running', name=op.f('uq_nlu_training_jobs_running')),
    )

    op.create_table(
        'nlu_activations',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('at', UTC, nullable=False),
        sa.Column('username', sa.String(length=64), nullable=False),
        sa.Column('action', sa.String(length=10), nullable=False),
        sa.Column('model_id', sa.Integer(), nullable=False),
        sa.Column('previous_model_id', sa.Integer(), nullable=True),
        sa.Column('outcome', sa.String(length=20), nullable=False),
        sa.Column('detail', sa.JSON(), nullable=True),
        sa.ForeignKeyConstraint(['model_id'], ['nlu_models.id'], name=op.f('fk_nlu_activations_model_id_nlu_models')),
        sa.ForeignKeyConstraint(['previous_model_id'], ['nlu_models.id'],
                                name=op.f('fk_nlu_activations_previous_model_id_nlu_models')),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_nlu_activations')),
    )
    op.create_index(op.f('ix_nlu_activations_at'), 'nlu_activations', ['at'], unique=False)


def downgrade() -> None:
    op.drop_index(op.f('ix_nlu_activations_at'), table_name='nlu_activations')
    op.drop_table('nlu_activations')
    op.drop_table('nlu_training_jobs')
    op.drop_index(op.f('ix_nlu_models_sha256'), table_name='nlu_models')
    op.drop_table('nlu_models')
    op.drop_table('nlu_reviews')
    op.drop_index(op.f('ix_nlu_changes_intent'), table_name='nlu_changes')
    op.drop_index(op.f('ix_nlu_changes_at'), table_name='nlu_changes')
    op.drop_table('nlu_changes')
