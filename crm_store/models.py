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

