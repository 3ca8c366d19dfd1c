"""campaigns: tags, segments, templates, campaigns and recipients, automations, scheduler

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01 09:00:00.000000

Written by hand (issue 6): only the campaigns tables, and APScheduler's job store table.
"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa

import crm_store.models

revision: str = '0007'
down_revision: Union[str, Sequence[str], None] = '0006'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

UTC = crm_store.models.UTCDateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        'patient_tags',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('patient_id', sa.Integer(), nullable=False),
        sa.Column('tag', sa.String(length=50), nullable=False),
        sa.Column('created_at', UTC, nullable=False),
        sa.ForeignKeyConstraint(['patient_id'], ['patients.id'], name=op.f('fk_patient_tags_patient_id_patients')),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_patient_tags')),
        sa.UniqueConstraint('patient_id', 'tag', name=op.f('uq_patient_tags_patient_id')),
    )
    op.create_index('ix_patient_tags_tag', 'patient_tags', ['tag'])

    op.create_table(
        'segments',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('name', sa.String(length=100), nullable=False),
        sa.Column('filters', sa.JSON(), nullable=False),
        sa.Column('created_by', sa.String(length=64), nullable=False),
        sa.Column('created_at', UTC, nullable=False),
        sa.Column('updated_at', UTC, nullable=False),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_segments')),
        sa.UniqueConstraint('name', name=op.f('uq_segments_name')),
    )

    op.create_table(
        'campaign_templates',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('name', sa.String(length=100), nullable=False),
        sa.Column('purpose', sa.String(length=15), nullable=False),
        sa.Column('body_en', sa.Text(), nullable=False),
        sa.Column('body_ar', sa.Text(), nullable=False),
        sa.Column('channel_bodies', sa.JSON(), nullable=False),
        sa.Column('whatsapp', sa.JSON(), nullable=True),
        sa.Column('created_at', UTC, nullable=False),
        sa.Column('updated_at', UTC, nullable=False),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_campaign_templates')),
        sa.UniqueConstraint('name', name=op.f('uq_campaign_templates_name')),
    )

    op.create_table(
        'campaigns',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('name', sa.String(length=100), nullable=False),
        sa.Column('segment_id', sa.Integer(), nullable=False),
        sa.Column('template_id', sa.Integer(), nullable=False),
        sa.Column('channels', sa.JSON(), nullable=False),
        sa.Column('status', sa.String(length=12), nullable=False),
        sa.Column('run_at', UTC, nullable=True),
        sa.Column('started_at', UTC, nullable=True),
        sa.Column('finished_at', UTC, nullable=True),
        sa.Column('audience', sa.Integer(), nullable=True),
        sa.Column('lease_owner', sa.String(length=100), nullable=True),
        sa.Column('lease_until', UTC, nullable=True),
        sa.Column('next_due_at', UTC, nullable=True),
        sa.Column('conversion_days', sa.Integer(), nullable=False),
        sa.Column('note', sa.Text(), nullable=True),
        sa.Column('created_by', sa.String(length=64), nullable=False),
        sa.Column('created_at', UTC, nullable=False),
        sa.Column('updated_at', UTC, nullable=False),
        sa.ForeignKeyConstraint(['segment_id'], ['segments.id'], name=op.f('fk_campaigns_segment_id_segments')),
        sa.ForeignKeyConstraint(['template_id'], ['campaign_templates.id'],
                                name=op.f('fk_campaigns_template_id_campaign_templates')),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_campaigns')),
    )
    op.create_index('ix_campaigns_status', 'campaigns', ['status', 'next_due_at'])

    op.create_table(
        'campaign_recipients',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('campaign_id', sa.Integer(), nullable=False),
        sa.Column('patient_id', sa.Integer(), nullable=False),
        sa.Column('status', sa.String(length=10), nullable=False),
        sa.Column('reason', sa.String(length=40), nullable=True),
        sa.Column('channel', sa.String(length=20), nullable=True),
        sa.Column('message_id', sa.Integer(), nullable=True),
        sa.Column('due_at', UTC, nullable=True),
        sa.Column('queued_at', UTC, nullable=True),
        sa.ForeignKeyConstraint(['campaign_id'], ['campaigns.id'],
                                name=op.f('fk_campaign_recipients_campaign_id_campaigns')),
        sa.ForeignKeyConstraint(['message_id'], ['messages.id'],
                                name=op.f('fk_campaign_recipients_message_id_messages')),
        sa.ForeignKeyConstraint(['patient_id'], ['patients.id'],
                                name=op.f('fk_campaign_recipients_patient_id_patients')),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_campaign_recipients')),
        sa.UniqueConstraint('campaign_id', 'patient_id', name=op.f('uq_campaign_recipients_campaign_id')),
        sa.UniqueConstraint('message_id', name=op.f('uq_campaign_recipients_message_id')),
    )
    op.create_index('ix_campaign_recipients_due', 'campaign_recipients', ['campaign_id', 'status', 'due_at'])
    op.create_index(op.f('ix_campaign_recipients_patient_id'), 'campaign_recipients', ['patient_id'])

    op.create_table(
        'automation_rules',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('key', sa.String(length=50), nullable=False),
        sa.Column('kind', sa.String(length=30), nullable=False),
        sa.Column('name_en', sa.String(length=100), nullable=False),
        sa.Column('name_ar', sa.String(length=100), nullable=False),
        sa.Column('enabled', sa.Boolean(), nullable=False),
        sa.Column('config', sa.JSON(), nullable=False),
        sa.Column('template_id', sa.Integer(), nullable=True),
        sa.Column('segment_id', sa.Integer(), nullable=True),
        sa.Column('channels', sa.JSON(), nullable=False),
        sa.Column('updated_by', sa.String(length=64), nullable=False),
        sa.Column('updated_at', UTC, nullable=False),
        sa.ForeignKeyConstraint(['segment_id'], ['segments.id'], name=op.f('fk_automation_rules_segment_id_segments')),
        sa.ForeignKeyConstraint(['template_id'], ['campaign_templates.id'],
                                name=op.f('fk_automation_rules_template_id_campaign_templates')),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_automation_rules')),
        sa.UniqueConstraint('key', name=op.f('uq_automation_rules_key')),
    )

    op.create_table(
        'automation_sends',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('rule_id', sa.Integer(), nullable=False),
        sa.Column('patient_id', sa.Integer(), nullable=False),
        sa.Column('key', sa.String(length=120), nullable=False),
        sa.Column('appointment_id', sa.Integer(), nullable=True),
        sa.Column('template_id', sa.Integer(), nullable=True),
        sa.Column('status', sa.String(length=10), nullable=False),
        sa.Column('reason', sa.String(length=40), nullable=True),
        sa.Column('channel', sa.String(length=20), nullable=True),
        sa.Column('message_id', sa.Integer(), nullable=True),
        sa.Column('due_at', UTC, nullable=False),
        sa.Column('not_after', UTC, nullable=True),
        sa.Column('created_at', UTC, nullable=False),
        sa.Column('queued_at', UTC, nullable=True),
        sa.Column('answer', sa.String(length=12), nullable=True),
        sa.Column('answered_at', UTC, nullable=True),
        sa.ForeignKeyConstraint(['appointment_id'], ['appointments.id'],
                                name=op.f('fk_automation_sends_appointment_id_appointments')),
        sa.ForeignKeyConstraint(['message_id'], ['messages.id'], name=op.f('fk_automation_sends_message_id_messages')),
        sa.ForeignKeyConstraint(['patient_id'], ['patients.id'], name=op.f('fk_automation_sends_patient_id_patients')),
        sa.ForeignKeyConstraint(['rule_id'], ['automation_rules.id'],
                                name=op.f('fk_automation_sends_rule_id_automation_rules')),
        sa.ForeignKeyConstraint(['template_id'], ['campaign_templates.id'],
                                name=op.f('fk_automation_sends_template_id_campaign_templates')),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_automation_sends')),
        sa.UniqueConstraint('rule_id', 'key', name=op.f('uq_automation_sends_rule_id')),
        sa.UniqueConstraint('message_id', name=op.f('uq_automation_sends_message_id')),
    )
    op.create_index('ix_automation_sends_due', 'automation_sends', ['status', 'due_at'])
    op.create_index(op.f('ix_automation_sends_patient_id'), 'automation_sends', ['patient_id'])
    op.create_index(op.f('ix_automation_sends_appointment_id'), 'automation_sends', ['appointment_id'])

    op.create_table(
        'scheduler_claims',
        sa.Column('job_id', sa.String(length=191), nullable=False),
        sa.Column('run_key', sa.Integer(), nullable=False),
        sa.Column('owner', sa.String(length=100), nullable=False),
        sa.Column('claimed_at', UTC, nullable=False),
        sa.PrimaryKeyConstraint('job_id', name=op.f('pk_scheduler_claims')),
    )

    # APScheduler 3's SQLAlchemyJobStore table, exactly as the job store declares it.
    op.create_table(
        'apscheduler_jobs',
        sa.Column('id', sa.String(length=191), nullable=False),
        sa.Column('next_run_time', sa.Float(precision=25), nullable=True),
        sa.Column('job_state', sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_apscheduler_jobs')),
    )
    op.create_index(op.f('ix_apscheduler_jobs_next_run_time'), 'apscheduler_jobs', ['next_run_time'])


def downgrade() -> None:
    op.drop_index(op.f('ix_apscheduler_jobs_next_run_time'), table_name='apscheduler_jobs')
    op.drop_table('apscheduler_jobs')
    op.drop_table('scheduler_claims')
    op.drop_index(op.f('ix_automation_sends_appointment_id'), table_name='automation_sends')
    op.drop_index(op.f('ix_automation_sends_patient_id'), table_name='automation_sends')
    op.drop_index('ix_automation_sends_due', table_name='automation_sends')
    op.drop_table('automation_sends')
    op.drop_table('automation_rules')
    op.drop_index(op.f('ix_campaign_recipients_patient_id'), table_name='campaign_recipients')
    op.drop_index('ix_campaign_recipients_due', table_name='campaign_recipients')
    op.drop_table('campaign_recipients')
    op.drop_index('ix_campaigns_status', table_name='campaigns')
    op.drop_table('campaigns')
    op.drop_table('campaign_templates')
    op.drop_table('segments')
    op.drop_index('ix_patient_tags_tag', table_name='patient_tags')
    op.drop_table('patient_tags')
