"""The CRM store: who the patients are, how they reach us, what they said, what they booked."""
from __future__ import annotations

import enum
from datetime import date, datetime, timezone

from sqlalchemy import (
    JSON,
    Boolean,
    Date,
    DateTime,
    Enum,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class UTCDateTime(TypeDecorator):
    """Aware UTC datetimes on every backend (SQLite keeps no zone, so it is restored on read)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the CRM store; times are stored in UTC")
        value = value.astimezone(timezone.utc)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value, dialect):
        if value is None:
            return None
        return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


class Base(DeclarativeBase):
    metadata = MetaData(
        naming_convention={
            "ix": "ix_%(column_0_label)s",
            "uq": "uq_%(table_name)s_%(column_0_name)s",
            "ck": "ck_%(table_name)s_%(constraint_name)s",
            "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
            "pk": "pk_%(table_name)s",
        }
    )
    type_annotation_map = {datetime: UTCDateTime, dict: JSON, list: JSON}


def _enum(cls: type[enum.Enum]) -> Enum:
    return Enum(cls, native_enum=False, length=20, values_callable=lambda e: [m.value for m in e])


class ConversationStatus(str, enum.Enum):
    bot = "bot"
    pending_human = "pending_human"
    human = "human"
    closed = "closed"


class SlotStatus(str, enum.Enum):
    free = "free"
    held = "held"
    booked = "booked"


class AppointmentStatus(str, enum.Enum):
    booked = "booked"
    cancelled = "cancelled"
    fulfilled = "fulfilled"
    noshow = "noshow"


class ConsentPurpose(str, enum.Enum):
    transactional = "transactional"
    marketing = "marketing"


class ConsentStatus(str, enum.Enum):
    granted = "granted"
    revoked = "revoked"


class Patient(Base):
    __tablename__ = "patients"

    id: Mapped[int] = mapped_column(primary_key=True)
    mrn: Mapped[str | None] = mapped_column(String(64), unique=True)
    national_id: Mapped[str | None] = mapped_column(String(32), unique=True)
    given_name_en: Mapped[str | None] = mapped_column(String(100))
    family_name_en: Mapped[str | None] = mapped_column(String(100))
    given_name_ar: Mapped[str | None] = mapped_column(String(100))
    family_name_ar: Mapped[str | None] = mapped_column(String(100))
    birth_date: Mapped[date | None] = mapped_column(Date)
    sex: Mapped[str | None] = mapped_column(String(10))
    preferred_language: Mapped[str] = mapped_column(String(5), default="ar")
    phone: Mapped[str | None] = mapped_column(String(20), index=True)
    email: Mapped[str | None] = mapped_column(String(254))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    identities: Mapped[list[ChannelIdentity]] = relationship(back_populates="patient")

    def display_name(self, language: str) -> str:
        en = " ".join(p for p in (self.given_name_en, self.family_name_en) if p)
        ar = " ".join(p for p in (self.given_name_ar, self.family_name_ar) if p)
        return (ar or en) if language == "ar" else (en or ar)

    @property
    def has_identity_details(self) -> bool:
        return bool(self.given_name_en or self.given_name_ar) and self.birth_date is not None


class ChannelIdentity(Base):
    """A patient's address on one channel (a phone number, a Telegram id, a web chat session)."""

    __tablename__ = "channel_identities"
    __table_args__ = (UniqueConstraint("channel", "address"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    patient_id: Mapped[int] = mapped_column(ForeignKey("patients.id"), index=True)
    channel: Mapped[str] = mapped_column(String(20))
    address: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_seen_at: Mapped[datetime] = mapped_column(default=utcnow)

    patient: Mapped[Patient] = relationship(back_populates="identities")


class Consent(Base):
    """Append-only consent history; the latest row per (patient, channel, purpose) is in force."""

    __tablename__ = "consents"
    __table_args__ = (Index("ix_consents_lookup", "patient_id", "channel", "purpose", "recorded_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    patient_id: Mapped[int] = mapped_column(ForeignKey("patients.id"))
    channel: Mapped[str] = mapped_column(String(20))
    purpose: Mapped[ConsentPurpose] = mapped_column(_enum(ConsentPurpose))
    status: Mapped[ConsentStatus] = mapped_column(_enum(ConsentStatus))
    source: Mapped[str] = mapped_column(String(50))
    recorded_at: Mapped[datetime] = mapped_column(default=utcnow)


class Conversation(Base):
    __tablename__ = "conversations"
    __table_args__ = (Index("ix_conversations_open", "patient_id", "channel", "status"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    patient_id: Mapped[int] = mapped_column(ForeignKey("patients.id"), index=True)
    identity_id: Mapped[int] = mapped_column(ForeignKey("channel_identities.id"))
    channel: Mapped[str] = mapped_column(String(20))
    status: Mapped[ConversationStatus] = mapped_column(
        _enum(ConversationStatus), default=ConversationStatus.bot
    )
    urgent: Mapped[bool] = mapped_column(Boolean, default=False)
    assignee: Mapped[str | None] = mapped_column(String(100))
    # The team (a department code) a handoff is for; supervisors transfer between teams.
    team: Mapped[str | None] = mapped_column(String(50), index=True)
    handoff_reason: Mapped[str | None] = mapped_column(String(50))
    language: Mapped[str] = mapped_column(String(5), default="ar")
    # WhatsApp's 24-hour customer-service window opens with each message from the patient.
    last_inbound_at: Mapped[datetime | None] = mapped_column()
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    patient: Mapped[Patient] = relationship()
    identity: Mapped[ChannelIdentity] = relationship()


class Message(Base):
    """Every message in and out. Outbound rows with status `queued` are the outbox."""

    __tablename__ = "messages"
    __table_args__ = (
        UniqueConstraint("channel", "provider_message_id"),
        Index("ix_messages_outbox", "direction", "status", "next_attempt_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    conversation_id: Mapped[int] = mapped_column(ForeignKey("conversations.id"), index=True)
    channel: Mapped[str] = mapped_column(String(20))
    direction: Mapped[str] = mapped_column(String(3))  # "in" | "out"
    sender: Mapped[str] = mapped_column(String(10))  # patient | bot | staff | system
    text: Mapped[str] = mapped_column(Text, default="")
    # What the patient saw when they tapped a button (the text is its payload, which the bot reads).
    display: Mapped[str | None] = mapped_column(Text)
    buttons: Mapped[list | None] = mapped_column(JSON)
    # A pre-approved template sent instead of free text (WhatsApp ContentSid and variables).
    template: Mapped[dict | None] = mapped_column(JSON)
    # transactional (answers, appointments) or marketing (campaigns): consent is per purpose.
    purpose: Mapped[str] = mapped_column(String(15), default="transactional")
    provider_message_id: Mapped[str | None] = mapped_column(String(100))
    # inbound: received → pending_bot (Rasa unreachable) → answered | routed_human
    # outbound: queued → sent → delivered | read, or failed
    status: Mapped[str] = mapped_column(String(20))
    error: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column()
    intent: Mapped[str | None] = mapped_column(String(50))
    confidence: Mapped[float | None] = mapped_column(Float)
    entities: Mapped[list | None] = mapped_column(JSON)
    language: Mapped[str | None] = mapped_column(String(5))
    private: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class JourneyEvent(Base):
    __tablename__ = "journey_events"

    id: Mapped[int] = mapped_column(primary_key=True)
    patient_id: Mapped[int] = mapped_column(ForeignKey("patients.id"), index=True)
    kind: Mapped[str] = mapped_column(String(40))
    reference: Mapped[str | None] = mapped_column(String(100))
    data: Mapped[dict | None] = mapped_column(JSON)
    occurred_at: Mapped[datetime] = mapped_column(default=utcnow)


class Department(Base):
    __tablename__ = "departments"

    id: Mapped[int] = mapped_column(primary_key=True)
    code: Mapped[str] = mapped_column(String(50), unique=True)
    name_en: Mapped[str] = mapped_column(String(100))
    name_ar: Mapped[str] = mapped_column(String(100))
    aliases: Mapped[list] = mapped_column(JSON, default=list)

    def name(self, language: str) -> str:
        return self.name_ar if language == "ar" else self.name_en


class Practitioner(Base):
    __tablename__ = "practitioners"

    id: Mapped[int] = mapped_column(primary_key=True)
    code: Mapped[str] = mapped_column(String(50), unique=True)
    name_en: Mapped[str] = mapped_column(String(100))
    name_ar: Mapped[str] = mapped_column(String(100))
    specialty_en: Mapped[str] = mapped_column(String(100))
    specialty_ar: Mapped[str] = mapped_column(String(100))
    department_id: Mapped[int] = mapped_column(ForeignKey("departments.id"), index=True)
    aliases: Mapped[list] = mapped_column(JSON, default=list)
    active: Mapped[bool] = mapped_column(Boolean, default=True)

    department: Mapped[Department] = relationship()

    def name(self, language: str) -> str:
        return self.name_ar if language == "ar" else self.name_en

    def specialty(self, language: str) -> str:
        return self.specialty_ar if language == "ar" else self.specialty_en


class Slot(Base):
    __tablename__ = "slots"
    __table_args__ = (
        UniqueConstraint("practitioner_id", "start_at"),
        Index("ix_slots_free", "status", "start_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    practitioner_id: Mapped[int] = mapped_column(ForeignKey("practitioners.id"))
    start_at: Mapped[datetime] = mapped_column()
    end_at: Mapped[datetime] = mapped_column()
    status: Mapped[SlotStatus] = mapped_column(_enum(SlotStatus), default=SlotStatus.free)
    held_by: Mapped[str | None] = mapped_column(String(64))
    held_until: Mapped[datetime | None] = mapped_column()

    practitioner: Mapped[Practitioner] = relationship()


class Appointment(Base):
    __tablename__ = "appointments"

    id: Mapped[int] = mapped_column(primary_key=True)
    # Sila's business identifier, shown to the patient and used for EHR conditional writes.
    reference: Mapped[str] = mapped_column(String(20), unique=True)
    patient_id: Mapped[int] = mapped_column(ForeignKey("patients.id"), index=True)
    practitioner_id: Mapped[int] = mapped_column(ForeignKey("practitioners.id"))
    slot_id: Mapped[int] = mapped_column(ForeignKey("slots.id"))
    status: Mapped[AppointmentStatus] = mapped_column(
        _enum(AppointmentStatus), default=AppointmentStatus.booked
    )
    source_channel: Mapped[str] = mapped_column(String(20))
    # [{"from": iso, "to": iso, "at": iso, "channel": str}] — every move, oldest first.
    history: Mapped[list] = mapped_column(JSON, default=list)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    patient: Mapped[Patient] = relationship()
    practitioner: Mapped[Practitioner] = relationship()
    slot: Mapped[Slot] = relationship()


class StaffRole(str, enum.Enum):
    agent = "agent"
    supervisor = "supervisor"
    marketer = "marketer"
    admin = "admin"


class StaffUser(Base):
    __tablename__ = "staff_users"

    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    display_name: Mapped[str] = mapped_column(String(100))
    password_hash: Mapped[str] = mapped_column(String(200))
    role: Mapped[StaffRole] = mapped_column(_enum(StaffRole))
    language: Mapped[str] = mapped_column(String(5), default="ar")
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    failed_logins: Mapped[int] = mapped_column(Integer, default=0)
    locked_until: Mapped[datetime | None] = mapped_column()
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class StaffSession(Base):
    """Server-side sessions: the cookie carries a random id; only its hash is stored."""

    __tablename__ = "staff_sessions"

    id: Mapped[int] = mapped_column(primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("staff_users.id"), index=True)
    csrf_token: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_seen_at: Mapped[datetime] = mapped_column(default=utcnow)
    ended_at: Mapped[datetime | None] = mapped_column()

    user: Mapped[StaffUser] = relationship()


class AuditEntry(Base):
    """Append-only: who did or saw what, about which patient, when, and how it ended."""

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(primary_key=True)
    at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    user_id: Mapped[int | None] = mapped_column(ForeignKey("staff_users.id"))
    username: Mapped[str] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(50))
    patient_id: Mapped[int | None] = mapped_column(ForeignKey("patients.id"), index=True)
    conversation_id: Mapped[int | None] = mapped_column(ForeignKey("conversations.id"))
    outcome: Mapped[str] = mapped_column(String(20))
    detail: Mapped[dict | None] = mapped_column(JSON)
    remote: Mapped[str | None] = mapped_column(String(64))


class SlackThread(Base):
    """A handoff notice posted to the staff's Slack channel: replies in its thread reach the patient.

    Rows with only `event_id` set record what was already handled: a notice claimed (`notice:…`)
    or a Slack event relayed (Slack retries deliveries)."""

    __tablename__ = "slack_threads"
    __table_args__ = (UniqueConstraint("channel_id", "thread_ts"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    conversation_id: Mapped[int | None] = mapped_column(ForeignKey("conversations.id"), index=True)
    channel_id: Mapped[str | None] = mapped_column(String(40))
    thread_ts: Mapped[str | None] = mapped_column(String(40))
    event_id: Mapped[str | None] = mapped_column(String(100), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class FhirResource(Base):
    """Sila's FHIR R4 store: what the EHR import brought (the clinical summary among it), what API
    clients wrote, and the FHIR view of Sila's own records (`crm_id` names the row it mirrors).

    Search columns are extracted on write: the patient a resource is about, its main date, and its
    identifiers (in `fhir_identifiers`). Every change bumps `version_id`; nothing is ever deleted,
    only marked so."""

    __tablename__ = "fhir_resources"
    __table_args__ = (
        UniqueConstraint("resource_type", "resource_id", name="uq_fhir_resources_type_id"),
        UniqueConstraint("resource_type", "crm_id", name="uq_fhir_resources_type_crm"),
        Index("ix_fhir_resources_patient", "resource_type", "patient_ref"),
        Index("ix_fhir_resources_date", "resource_type", "date"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    resource_type: Mapped[str] = mapped_column(String(40))
    resource_id: Mapped[str] = mapped_column(String(64))
    version_id: Mapped[int] = mapped_column(Integer, default=1)
    last_updated: Mapped[datetime] = mapped_column(default=utcnow)
    # "Patient/<id>" of the patient this resource is about (the Patient itself for a Patient).
    patient_ref: Mapped[str | None] = mapped_column(String(100))
    date: Mapped[datetime | None] = mapped_column()
    crm_id: Mapped[int | None] = mapped_column(Integer)
    deleted: Mapped[bool] = mapped_column(Boolean, default=False)
    content: Mapped[dict] = mapped_column(JSON)


class FhirIdentifier(Base):
    __tablename__ = "fhir_identifiers"
    __table_args__ = (Index("ix_fhir_identifiers_lookup", "resource_type", "value", "system"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    resource_pk: Mapped[int] = mapped_column(ForeignKey("fhir_resources.id", ondelete="CASCADE"), index=True)
    resource_type: Mapped[str] = mapped_column(String(40))
    system: Mapped[str] = mapped_column(String(255), default="")
    value: Mapped[str] = mapped_column(String(255))


class FhirClient(Base):
    """A client of Sila's FHIR API: a bearer token (only its hash is kept) and SMART scopes."""

    __tablename__ = "fhir_clients"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    scopes: Mapped[list] = mapped_column(JSON, default=list)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class EhrOutbox(Base):
    """Writes owed to the hospital's EHR, queued in the transaction that made them necessary.

    `kind` is the FHIR resource type, `crm_id` the Sila row to map when the write is attempted
    (so a retry sends the row as it is then, not as it was when queued)."""

    __tablename__ = "ehr_outbox"
    __table_args__ = (Index("ix_ehr_outbox_due", "status", "next_attempt_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(40))
    crm_id: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(10), default="pending")  # pending | done | failed
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class EhrLink(Base):
    """Which EHR resource (id and last version the EHR returned) a Sila row was written as."""

    __tablename__ = "ehr_links"
    __table_args__ = (UniqueConstraint("resource_type", "crm_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    resource_type: Mapped[str] = mapped_column(String(40))
    crm_id: Mapped[int] = mapped_column(Integer)
    ehr_id: Mapped[str] = mapped_column(String(64))
    ehr_version: Mapped[str | None] = mapped_column(String(64))
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


# --- Issue 6: campaigns and workflow automation (campaigns/) -----------------------------------
from sqlalchemy import Column, LargeBinary, Table  # noqa: E402


class PatientTag(Base):
    """A label staff put on a patient ("vip", "diabetes-program") for segments."""

    __tablename__ = "patient_tags"
    __table_args__ = (UniqueConstraint("patient_id", "tag"), Index("ix_patient_tags_tag", "tag"))

    id: Mapped[int] = mapped_column(primary_key=True)
    patient_id: Mapped[int] = mapped_column(ForeignKey("patients.id"))
    tag: Mapped[str] = mapped_column(String(50))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Segment(Base):
    """A saved filter over patients (campaigns/segments.py reads `filters`)."""

    __tablename__ = "segments"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    filters: Mapped[dict] = mapped_column(JSON, default=dict)
    created_by: Mapped[str] = mapped_column(String(64), default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class CampaignTemplate(Base):
    """A message in Arabic and English with {variables}; per-channel wording may override the body,
    and WhatsApp sends an approved template (ContentSid per language, numbered variables)."""

    __tablename__ = "campaign_templates"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    purpose: Mapped[str] = mapped_column(String(15), default="marketing")  # marketing | transactional
    body_en: Mapped[str] = mapped_column(Text, default="")
    body_ar: Mapped[str] = mapped_column(Text, default="")
    # {"sms": {"en": "…", "ar": "…"}}: a channel's own wording (SMS is shorter, say).
    channel_bodies: Mapped[dict] = mapped_column(JSON, default=dict)
    # {"content_sid": {"en": "HX…", "ar": "HX…"}, "variables": {"1": "{first_name}"}}
    whatsapp: Mapped[dict | None] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class Campaign(Base):
    """A broadcast of one template to one segment. status: draft → scheduled → running ⇄ paused →
    done, or cancelled, or missed (its start passed while no worker was up to fire it)."""

    __tablename__ = "campaigns"
    __table_args__ = (Index("ix_campaigns_status", "status", "next_due_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    segment_id: Mapped[int] = mapped_column(ForeignKey("segments.id"))
    template_id: Mapped[int] = mapped_column(ForeignKey("campaign_templates.id"))
    channels: Mapped[list] = mapped_column(JSON, default=list)  # in order of preference
    status: Mapped[str] = mapped_column(String(12), default="draft")
    run_at: Mapped[datetime | None] = mapped_column()
    started_at: Mapped[datetime | None] = mapped_column()
    finished_at: Mapped[datetime | None] = mapped_column()
    # The audience is frozen once, when the campaign starts (None: not yet).
    audience: Mapped[int | None] = mapped_column(Integer)
    # The worker sending it, until when; a crashed worker's lease lapses and another takes over.
    lease_owner: Mapped[str | None] = mapped_column(String(100))
    lease_until: Mapped[datetime | None] = mapped_column()
    # The earliest deferred recipient (quiet hours): nothing to do before then.
    next_due_at: Mapped[datetime | None] = mapped_column()
    conversion_days: Mapped[int] = mapped_column(Integer, default=7)
    note: Mapped[str | None] = mapped_column(Text)
    created_by: Mapped[str] = mapped_column(String(64), default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    segment: Mapped[Segment] = relationship()
    template: Mapped[CampaignTemplate] = relationship()


class CampaignRecipient(Base):
    """One patient of a campaign. The unique (campaign, patient) and the message id written in the
    transaction that queues the message make "exactly one message per recipient" crash-safe."""

    __tablename__ = "campaign_recipients"
    __table_args__ = (
        UniqueConstraint("campaign_id", "patient_id"),
        UniqueConstraint("message_id"),
        Index("ix_campaign_recipients_due", "campaign_id", "status", "due_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaigns.id"))
    patient_id: Mapped[int] = mapped_column(ForeignKey("patients.id"), index=True)
    status: Mapped[str] = mapped_column(String(10), default="pending")  # pending | queued | skipped
    # Why skipped (opted_out, no_consent, unreachable, frequency_cap, cancelled) or deferred (quiet_hours).
    reason: Mapped[str | None] = mapped_column(String(40))
    channel: Mapped[str | None] = mapped_column(String(20))
    message_id: Mapped[int | None] = mapped_column(ForeignKey("messages.id"))
    due_at: Mapped[datetime | None] = mapped_column()
    queued_at: Mapped[datetime | None] = mapped_column()


class AutomationRule(Base):
    """A workflow rule: a trigger (kind + config: offsets, delay, conditions, steps), an optional
    segment, a template, channels in order of preference; on or off."""

    __tablename__ = "automation_rules"

    id: Mapped[int] = mapped_column(primary_key=True)
    key: Mapped[str] = mapped_column(String(50), unique=True)
    # appointment_reminder | noshow_followup | post_visit | birthday | condition_drip
    kind: Mapped[str] = mapped_column(String(30))
    name_en: Mapped[str] = mapped_column(String(100))
    name_ar: Mapped[str] = mapped_column(String(100))
    enabled: Mapped[bool] = mapped_column(Boolean, default=False)
    config: Mapped[dict] = mapped_column(JSON, default=dict)
    template_id: Mapped[int | None] = mapped_column(ForeignKey("campaign_templates.id"))
    segment_id: Mapped[int | None] = mapped_column(ForeignKey("segments.id"))
    channels: Mapped[list] = mapped_column(JSON, default=list)
    updated_by: Mapped[str] = mapped_column(String(64), default="")
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class AutomationSend(Base):
    """One message a rule owes one patient (`key` names the occasion: an appointment and offset, a
    birthday's year, a drip step); unique per rule, so a rule never sends for an occasion twice."""

    __tablename__ = "automation_sends"
    __table_args__ = (
        UniqueConstraint("rule_id", "key"),
        UniqueConstraint("message_id"),
        Index("ix_automation_sends_due", "status", "due_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    rule_id: Mapped[int] = mapped_column(ForeignKey("automation_rules.id"))
    patient_id: Mapped[int] = mapped_column(ForeignKey("patients.id"), index=True)
    key: Mapped[str] = mapped_column(String(120))
    appointment_id: Mapped[int | None] = mapped_column(ForeignKey("appointments.id"), index=True)
    template_id: Mapped[int | None] = mapped_column(ForeignKey("campaign_templates.id"))
    status: Mapped[str] = mapped_column(String(10), default="pending")  # pending | queued | skipped
    reason: Mapped[str | None] = mapped_column(String(40))
    channel: Mapped[str | None] = mapped_column(String(20))
    message_id: Mapped[int | None] = mapped_column(ForeignKey("messages.id"))
    due_at: Mapped[datetime] = mapped_column(default=utcnow)
    # Past this the message is pointless (a reminder after the visit): skipped instead.
    not_after: Mapped[datetime | None] = mapped_column()
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    queued_at: Mapped[datetime | None] = mapped_column()
    # A reminder's answer: confirmed | cancelled.
    answer: Mapped[str | None] = mapped_column(String(12))
    answered_at: Mapped[datetime | None] = mapped_column()


class SchedulerClaim(Base):
    """Which run of a recurring job was claimed, so that of several workers only one does it."""

    __tablename__ = "scheduler_claims"

    job_id: Mapped[str] = mapped_column(String(191), primary_key=True)
    run_key: Mapped[int] = mapped_column(Integer, default=0)
    owner: Mapped[str] = mapped_column(String(100), default="")
    claimed_at: Mapped[datetime] = mapped_column(default=utcnow)


# APScheduler 3's SQLAlchemy job store, declared here so the schema is migrated with the rest
# (the job store's own create-if-missing then finds it).
apscheduler_jobs = Table(
    "apscheduler_jobs", Base.metadata,
    Column("id", String(191), primary_key=True),
    Column("next_run_time", Float(25), index=True),
    Column("job_state", LargeBinary, nullable=False),
)


# --- Issue 9: admins train the bot (NLU data changes, review queue, training, models) ---------


class NluChange(Base):
    """Who changed which training example and how; the YAML in nlu_data/ holds the result."""

    __tablename__ = "nlu_changes"

    id: Mapped[int] = mapped_column(primary_key=True)
    at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    user_id: Mapped[int | None] = mapped_column(ForeignKey("staff_users.id"))
    username: Mapped[str] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(10))  # add | edit | delete
    language: Mapped[str] = mapped_column(String(5))
    intent: Mapped[str] = mapped_column(String(80), index=True)
    new_intent: Mapped[str | None] = mapped_column(String(80))
    before: Mapped[str | None] = mapped_column(Text)
    after: Mapped[str | None] = mapped_column(Text)
    # "console", or "review:<message id>" for a patient message labelled from the review queue.
    source: Mapped[str] = mapped_column(String(40), default="console")


class NluReview(Base):
    """A patient message from the review queue that an admin labelled or set aside."""

    __tablename__ = "nlu_reviews"

    id: Mapped[int] = mapped_column(primary_key=True)
    message_id: Mapped[int] = mapped_column(ForeignKey("messages.id"), unique=True)
    outcome: Mapped[str] = mapped_column(String(10))  # labelled | dismissed
    intent: Mapped[str | None] = mapped_column(String(80))
    example: Mapped[str | None] = mapped_column(Text)
    language: Mapped[str | None] = mapped_column(String(5))
    username: Mapped[str] = mapped_column(String(64))
    at: Mapped[datetime] = mapped_column(default=utcnow)


class NluModel(Base):
    """A model archive kept in SILA_MODELS_DIR/trained/: trained in the console, or found active."""

    __tablename__ = "nlu_models"

    id: Mapped[int] = mapped_column(primary_key=True)
    file: Mapped[str] = mapped_column(String(255), unique=True)  # relative to the models directory
    sha256: Mapped[str] = mapped_column(String(64), index=True)
    size: Mapped[int] = mapped_column(Integer)
    source: Mapped[str] = mapped_column(String(10))  # trained | found
    # Fingerprint of the training inputs (as `sila train` computes it), when known.
    fingerprint: Mapped[str | None] = mapped_column(String(64))
    created_by: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # Held-out figures per language: {"ar": {"accuracy", "macro_f1", "weighted_f1", "n"}, ...}
    summary: Mapped[dict | None] = mapped_column(JSON)
    file_deleted_at: Mapped[datetime | None] = mapped_column()


class NluTrainingJob(Base):
    """A training run in the background: progress while it runs, the evaluation when it is done."""

    __tablename__ = "nlu_training_jobs"

    id: Mapped[int] = mapped_column(primary_key=True)
    status: Mapped[str] = mapped_column(String(12))  # running | succeeded | failed | interrupted
    stage: Mapped[str] = mapped_column(String(40), default="preparing")
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    detail: Mapped[str | None] = mapped_column(String(200))
    started_by: Mapped[str] = mapped_column(String(64))
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    heartbeat_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column()
    fingerprint: Mapped[str | None] = mapped_column(String(64))
    model_id: Mapped[int | None] = mapped_column(ForeignKey("nlu_models.id"))
    compared_model_id: Mapped[int | None] = mapped_column(ForeignKey("nlu_models.id"))
    # {"candidate": {lang: report}, "active": {lang: report} | None, "held_out": {lang: sha256}}
    evaluation: Mapped[dict | None] = mapped_column(JSON)
    error: Mapped[str | None] = mapped_column(Text)
    log_tail: Mapped[str | None] = mapped_column(Text)
    # 1 while running, NULL after: the unique index lets one training run at a time across workers.
    running: Mapped[int | None] = mapped_column(Integer, unique=True)


class NluActivation(Base):
    """Append-only: which model the Rasa server(s) loaded, when and at whose request."""

    __tablename__ = "nlu_activations"

    id: Mapped[int] = mapped_column(primary_key=True)
    at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    username: Mapped[str] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(10))  # activate | rollback
    model_id: Mapped[int] = mapped_column(ForeignKey("nlu_models.id"))
    previous_model_id: Mapped[int | None] = mapped_column(ForeignKey("nlu_models.id"))
    outcome: Mapped[str] = mapped_column(String(20))  # ok | failed
    detail: Mapped[dict | None] = mapped_column(JSON)


# --- Issue 8: the patient portal (portal/) -------------------------------------------------------


class PortalCode(Base):
    """A one-time sign-in code sent to a phone number; only its argon2 hash is kept.

    A row is written for every request, whether the number is registered or not, so the limits
    (codes per hour, wrong tries, cool-down) hold alike and the answer never tells which it was.
    status: live → used | superseded (a newer code was sent) | locked (too many wrong tries)."""

    __tablename__ = "portal_codes"
    __table_args__ = (Index("ix_portal_codes_phone", "phone", "created_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    phone: Mapped[str] = mapped_column(String(20))
    code_hash: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(12), default="live")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime] = mapped_column()
    finished_at: Mapped[datetime | None] = mapped_column()
    # The outbound message that carried it: its text is redacted once the code is sent or dead.
    message_id: Mapped[int | None] = mapped_column(ForeignKey("messages.id"))
    redacted_at: Mapped[datetime | None] = mapped_column()
    remote: Mapped[str | None] = mapped_column(String(64))


class PortalSession(Base):
    """A patient's portal session (never a staff session): the cookie carries a random id, the
    database its SHA-256. `acting_patient_id` is whose record is shown: their own, or a child's
    they are the guardian of."""

    __tablename__ = "portal_sessions"

    id: Mapped[int] = mapped_column(primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    patient_id: Mapped[int] = mapped_column(ForeignKey("patients.id"), index=True)
    acting_patient_id: Mapped[int] = mapped_column(ForeignKey("patients.id"))
    csrf_token: Mapped[str] = mapped_column(String(64))
    language: Mapped[str] = mapped_column(String(5), default="ar")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_seen_at: Mapped[datetime] = mapped_column(default=utcnow)
    ended_at: Mapped[datetime | None] = mapped_column()


class GuardianLink(Base):
    """A guardian (a patient themselves) who may act for a child's record in the portal.
    `source` says who made the link: the EHR (RelatedPerson/…, Patient.contact) or staff."""

    __tablename__ = "guardian_links"
    __table_args__ = (UniqueConstraint("guardian_id", "child_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    guardian_id: Mapped[int] = mapped_column(ForeignKey("patients.id"), index=True)
    child_id: Mapped[int] = mapped_column(ForeignKey("patients.id"), index=True)
    # v3 RoleCode as the EHR gives it (MTH, FTH, PRN, GUARD…), or "parent"/"guardian".
    relationship: Mapped[str] = mapped_column(String(40), default="parent")
    source: Mapped[str] = mapped_column(String(100), default="staff")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    ended_at: Mapped[datetime | None] = mapped_column()


# --- Issue 7: surveys and feedback (surveys/) --------------------------------------------------


class Survey(Base):
    """A survey definition (surveys/definitions/*.yml, or edited in the console): the questions in
    Arabic and English with their branching, as validated JSON. Every change bumps `version`."""

    __tablename__ = "surveys"

    id: Mapped[int] = mapped_column(primary_key=True)
    code: Mapped[str] = mapped_column(String(50), unique=True)
    title_en: Mapped[str] = mapped_column(String(200))
    title_ar: Mapped[str] = mapped_column(String(200))
    definition: Mapped[dict] = mapped_column(JSON)
    version: Mapped[int] = mapped_column(Integer, default=1)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    # "file": loaded from the YAML (and reloaded when the file changes); "console": edited by
    # staff, after which the file no longer overwrites it.
    source: Mapped[str] = mapped_column(String(10), default="file")
    file_hash: Mapped[str | None] = mapped_column(String(64))
    updated_by: Mapped[str] = mapped_column(String(64), default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class SurveyVersion(Base):
    """Every version a survey has had, kept: responses name the version they were asked."""

    __tablename__ = "survey_versions"
    __table_args__ = (UniqueConstraint("survey_id", "version"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    survey_id: Mapped[int] = mapped_column(ForeignKey("surveys.id"))
    version: Mapped[int] = mapped_column(Integer)
    definition: Mapped[dict] = mapped_column(JSON)
    created_by: Mapped[str] = mapped_column(String(64), default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class SurveyResponse(Base):
    """One survey sent to one patient, and how far they got. `open_patient_id` is the patient's id
    while the survey is open and NULL after: its unique constraint keeps one survey at a time per
    patient, whatever the number of workers. `occasion` ("visit:<appointment>", "chat:<…>",
    "campaign:<…>") is unique per survey, so an occasion is never surveyed twice."""

    __tablename__ = "survey_responses"
    __table_args__ = (
        UniqueConstraint("open_patient_id"),
        UniqueConstraint("survey_id", "occasion"),
        Index("ix_survey_responses_offered", "survey_id", "offered_at"),
        Index("ix_survey_responses_open", "status", "expires_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    survey_id: Mapped[int] = mapped_column(ForeignKey("surveys.id"))
    survey_code: Mapped[str] = mapped_column(String(50))
    # The version sent (survey_versions): an edit meanwhile does not change the questions asked.
    survey_version: Mapped[int] = mapped_column(Integer)
    patient_id: Mapped[int] = mapped_column(ForeignKey("patients.id"), index=True)
    open_patient_id: Mapped[int | None] = mapped_column(Integer)
    conversation_id: Mapped[int | None] = mapped_column(ForeignKey("conversations.id"), index=True)
    channel: Mapped[str] = mapped_column(String(20))
    language: Mapped[str] = mapped_column(String(5))
    reason: Mapped[str] = mapped_column(String(20))  # visit | chat | campaign | manual
    occasion: Mapped[str | None] = mapped_column(String(80))
    appointment_id: Mapped[int | None] = mapped_column(ForeignKey("appointments.id"))
    department: Mapped[str | None] = mapped_column(String(50))
    practitioner: Mapped[str | None] = mapped_column(String(50))
    # Names the questions may mention ({department}, {doctor}, {hospital}) in both languages.
    context: Mapped[dict] = mapped_column(JSON, default=dict)
    # sent → in_progress → completed | stopped | expired
    status: Mapped[str] = mapped_column(String(12), default="sent")
    stop_reason: Mapped[str | None] = mapped_column(String(20))
    current_question: Mapped[str | None] = mapped_column(String(40))
    attempts: Mapped[int] = mapped_column(Integer, default=0)  # invalid answers to the current question
    answered: Mapped[int] = mapped_column(Integer, default=0)
    nps: Mapped[int | None] = mapped_column(Integer)
    csat: Mapped[int | None] = mapped_column(Integer)
    alert: Mapped[str | None] = mapped_column(String(20))  # detractor | low_satisfaction
    last_message_id: Mapped[int | None] = mapped_column(Integer)
    offered_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_activity_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime] = mapped_column()
    finished_at: Mapped[datetime | None] = mapped_column()

    survey: Mapped[Survey] = relationship()


class SurveyAnswer(Base):
    """One answer (or a skipped question), in the language the patient wrote it."""

    __tablename__ = "survey_answers"

    id: Mapped[int] = mapped_column(primary_key=True)
    response_id: Mapped[int] = mapped_column(ForeignKey("survey_responses.id"), index=True)
    question_id: Mapped[str] = mapped_column(String(40))
    kind: Mapped[str] = mapped_column(String(10))  # nps | csat | yes_no | choice | text
    value_int: Mapped[int | None] = mapped_column(Integer)
    value_text: Mapped[str | None] = mapped_column(Text)
    skipped: Mapped[bool] = mapped_column(Boolean, default=False)
    language: Mapped[str | None] = mapped_column(String(5))
    message_id: Mapped[int | None] = mapped_column(ForeignKey("messages.id"))
    answered_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
