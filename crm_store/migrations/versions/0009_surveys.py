"""surveys: definitions and their versions, responses (one open per patient), answers

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-30 22:05:00.000000

Written by hand (issue 7): only the survey tables.
"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa

import crm_store.models

revision: str = '0009'
down_revision: Union[str, Sequence[str], None] = '0008'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

UTC = crm_store.models.UTCDateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        'surveys',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('code', sa.String(length=50), nullable=False),
        sa.Column('title_en', sa.String(length=200), nullable=False),
        sa.Column('title_ar', sa.String(length=200), nullable=False),
        sa.Column('definition', sa.JSON(), nullable=False),
        sa.Column('version', sa.Integer(), nullable=False),
        sa.Column('active', sa.Boolean(), nullable=False),
        sa.Column('source', sa.String(length=10), nullable=False),
        sa.Column('file_hash', sa.String(length=64), nullable=True),
        sa.Column('updated_by', sa.String(length=64), nullable=False),
        sa.Column('created_at', UTC, nullable=False),
        sa.Column('updated_at', UTC, nullable=False),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_surveys')),
        sa.UniqueConstraint('code', name=op.f('uq_surveys_code')),
    )

    op.create_table(
        'survey_versions',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('survey_id', sa.Integer(), nullable=False),
        sa.Column('version', sa.Integer(), nullable=False),
        sa.Column('definition', sa.JSON(), nullable=False),
        sa.Column('created_by', sa.String(length=64), nullable=False),
        sa.Column('created_at', UTC, nullable=False),
        sa.ForeignKeyConstraint(['survey_id'], ['surveys.id'], name=op.f('fk_survey_versions_survey_id_surveys')),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_survey_versions')),
        sa.UniqueConstraint('survey_id', 'version', name=op.f('uq_survey_versions_survey_id')),
    )

    op.create_table(
        'survey_responses',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('survey_id', sa.Integer(), nullable=False),
        sa.Column('survey_code', sa.String(length=50), nullable=False),
        sa.Column('survey_version', sa.Integer(), nullable=False),
        sa.Column('patient_id', sa.Integer(), nullable=False),
        sa.Column('open_patient_id', sa.Integer(), nullable=True),
        sa.Column('conversation_id', sa.Integer(), nullable=True),
        sa.Column('channel', sa.String(length=20), nullable=False),
        sa.Column('language', sa.String(length=5), nullable=False),
        sa.Column('reason', sa.String(length=20), nullable=False),
        sa.Column('occasion', sa.String(length=80), nullable=True),
        sa.Column('appointment_id', sa.Integer(), nullable=True),
        sa.Column('department', sa.String(length=50), nullable=True),
        sa.Column('practitioner', sa.String(length=50), nullable=True),
        sa.Column('context', sa.JSON(), nullable=False),
        sa.Column('status', sa.String(length=12), nullable=False),
        sa.Column('stop_reason', sa.String(length=20), nullable=True),
        sa.Column('current_question', sa.String(length=40), nullable=True),
        sa.Column('attempts', sa.Integer(), nullable=False),
        sa.Column('answered', sa.Integer(), nullable=False),
        sa.Column('nps', sa.Integer(), nullable=True),
        sa.Column('csat', sa.Integer(), nullable=True),
        sa.Column('alert', sa.String(length=20), nullable=True),
        sa.Column('last_message_id', sa.Integer(), nullable=True),
        sa.Column('offered_at', UTC, nullable=False),
        sa.Column('last_activity_at', UTC, nullable=False),
        sa.Column('expires_at', UTC, nullable=False),
        sa.Column('finished_at', UTC, nullable=True),
        sa.ForeignKeyConstraint(['survey_id'], ['surveys.id'], name=op.f('fk_survey_responses_survey_id_surveys')),
        sa.ForeignKeyConstraint(['patient_id'], ['patients.id'], name=op.f('fk_survey_responses_patient_id_patients')),
        sa.ForeignKeyConstraint(['conversation_id'], ['conversations.id'],
                                name=op.f('fk_survey_responses_conversation_id_conversations')),
        sa.ForeignKeyConstraint(['appointment_id'], ['appointments.id'],
                                name=op.f('fk_survey_responses_appointment_id_appointments')),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_survey_responses')),
        sa.UniqueConstraint('open_patient_id', name=op.f('uq_survey_responses_open_patient_id')),
        sa.UniqueConstraint('survey_id', 'occasion', name=op.f('uq_survey_responses_survey_id')),
    )
    op.create_index(op.f('ix_survey_responses_patient_id'), 'survey_responses', ['patient_id'], unique=False)
    op.create_index(op.f('ix_survey_responses_conversation_id'), 'survey_responses', ['conversation_id'],
                    unique=False)
    op.create_index('ix_survey_responses_offered', 'survey_responses', ['survey_id', 'offered_at'], unique=False)
    op.create_index('ix_survey_responses_open', 'survey_responses', ['status', 'expires_at'], unique=False)

    op.create_table(
        'survey_answers',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('response_id', sa.Integer(), nullable=False),
        sa.Column('question_id', sa.String(length=40), nullable=False),
        sa.Column('kind', sa.String(length=10), nullable=False),
        sa.Column('value_int', sa.Integer(), nullable=True),
        sa.Column('value_text', sa.Text(), nullable=True),
        sa.Column('skipped', sa.Boolean(), nullable=False),
        sa.Column('language', sa.String(length=5), nullable=True),
        sa.Column('message_id', sa.Integer(), nullable=True),
        sa.Column('answered_at', UTC, nullable=False),
        sa.ForeignKeyConstraint(['response_id'], ['survey_responses.id'],
                                name=op.f('fk_survey_answers_response_id_survey_responses')),
        sa.ForeignKeyConstraint(['message_id'], ['messages.id'], name=op.f('fk_survey_answers_message_id_messages')),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_survey_answers')),
    )
    op.create_index(op.f('ix_survey_answers_response_id'), 'survey_answers', ['response_id'], unique=False)
    op.create_index(op.f('ix_survey_answers_answered_at'), 'survey_answers', ['answered_at'], unique=False)


def downgrade() -> None:
    op.drop_index(op.f('ix_survey_answers_answered_at'), table_name='survey_answers')
    op.drop_index(op.f('ix_survey_answers_response_id'), table_name='survey_answers')
    op.drop_table('survey_answers')
    op.drop_index('ix_survey_responses_open', table_name='survey_responses')
    op.drop_index('ix_survey_responses_offered', table_name='survey_responses')
    op.drop_index(op.f('ix_survey_responses_conversation_id'), table_name='survey_responses')
    op.drop_index(op.f('ix_survey_responses_patient_id'), table_name='survey_responses')
    op.drop_table('survey_responses')
    op.drop_table('survey_versions')
    op.drop_table('surveys')
