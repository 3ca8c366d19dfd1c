"""Segments: a filter over patients, compiled to one SQL query (the same on SQLite and PostgreSQL,
except for reading the codes inside a FHIR Condition's JSON).

What each filter means (all given filters must hold; a list matches any of its values):
- age_min / age_max: full years today in the hospital's zone (a 29 February birthday counts from
  1 March in other years); patients without a birth date never match an age filter.
- sex, languages: the patient record's `sex` and `preferred_language`.
- conditions: a Condition from the EHR import (not deleted) about the patient with one of the codes
  in `code.coding[].code` (any code system).
- last_visit_after / last_visit_before: a visit is a fulfilled appointment (its slot's start) or an
  EHR Encounter (its period start) that was not planned, cancelled or entered in error. "After D":
  a visit on or after D; "before D": at least one visit, none on or after D (days are local).
- departments / practitioners: a fulfilled appointment with that doctor or in that department.
- tags: one of the patient's tags.
- channels: reachable on one of them (an identity on that channel; for SMS also a phone number on
  the record).
- marketing_consent: the latest marketing consent on one of `channels` (any channel when none are
  given) is "granted".
"""
from __future__ import annotations

from datetime import date, datetime, time
from typing import Literal
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict, Field, field_validator
from sqlalchemy import Select, and_, bindparam, exists, func, literal, or_, select, text
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from crm_store.models import (
    Appointment,
    AppointmentStatus,
    ChannelIdentity,
    Consent,
    ConsentPurpose,
    ConsentStatus,
    Department,
    FhirResource,
    Patient,
    PatientTag,
    Practitioner,
    Slot,
    UTCDateTime,
)

CHANNELS = ("sms", "whatsapp", "telegram", "email", "webchat", "voice")
NOT_A_VISIT = ("planned", "cancelled", "entered-in-error")


class SegmentFilters(BaseModel):
    model_config = ConfigDict(extra="forbid")

    age_min: int | None = Field(None, ge=0, le=130)
    age_max: int | None = Field(None, ge=0, le=130)
    sex: list[Literal["male", "female", "other", "unknown"]] = []
    languages: list[Literal["ar", "en"]] = []
    conditions: list[str] = []
    last_visit_after: date | None = None
    last_visit_before: date | None = None
    departments: list[str] = []
    practitioners: list[str] = []
    tags: list[str] = []
    channels: list[Literal["sms", "whatsapp", "telegram", "email", "webchat", "voice"]] = []
    marketing_consent: bool = False

    @field_validator("conditions", "departments", "practitioners", "tags", mode="before")
    @classmethod
    def _words(cls, value):
        """Accept "a, b" as well as ["a", "b"]; blanks dropped."""
        if isinstance(value, str):
            value = value.replace("،", ",").split(",")
        return [str(v).strip() for v in value or [] if str(v).strip()]

    @field_validator("age_min", "age_max", "last_visit_after", "last_visit_before", mode="before")
    @classmethod
    def _blank_is_none(cls, value):
        return None if value == "" else value


def years_before(day: date, years: int) -> date:
    """The same calendar day `years` earlier (28 February for a 29th that does not exist)."""
    try:
        return day.replace(year=day.year - years)
    except ValueError:
        return day.replace(year=day.year - years, day=28)


def _local_midnight(day: date, zone: ZoneInfo) -> datetime:
    return datetime.combine(day, time(), zone)


def _visits_on_or_after(moment: datetime | None):
    """EXISTS a visit of the outer patient (at or after `moment` when given)."""
    appointment = (
        select(literal(1)).select_from(Appointment).join(Slot, Slot.id == Appointment.slot_id)
        .where(Appointment.patient_id == Patient.id, Appointment.status == AppointmentStatus.fulfilled)
    )
    encounter, mirror = aliased(FhirResource), aliased(FhirResource)
    ehr = (
        select(literal(1)).select_from(encounter)
        .join(mirror, and_(mirror.resource_type == "Patient", mirror.crm_id == Patient.id,
                           encounter.patient_ref == literal("Patient/") + mirror.resource_id))
        .where(encounter.resource_type == "Encounter", encounter.deleted.is_(False), encounter.date.is_not(None),
               encounter.content["status"].as_string().not_in(NOT_A_VISIT))
    )
    if moment is not None:
        appointment = appointment.where(Slot.start_at >= moment)
        ehr = ehr.where(encounter.date >= moment)
    return or_(exists(appointment), exists(ehr))


def _condition_clause(dialect: str, codes: list[str], since: datetime | None = None):
    """EXISTS a Condition about the outer patient with one of `codes` among its codings (recorded
    or begun at `since` or later, when given)."""
    if dialect == "postgresql":
        codings = "json_array_elements(CASE WHEN json_typeof(c.content -> 'code' -> 'coding') = 'array' " \
                  "THEN c.content -> 'code' -> 'coding' END) AS coding"
        code = "coding ->> 'code'"
    else:
        codings = "json_each(c.content, '$.code.coding') AS coding"
        code = "json_extract(coding.value, '$.code')"
    params: dict = {f"code_{i}": value for i, value in enumerate(codes)}
    placeholders = ", ".join(f":{name}" for name in params)
    return text(
        "EXISTS (SELECT 1 FROM fhir_resources AS pr JOIN fhir_resources AS c "
        "ON c.patient_ref = 'Patient/' || pr.resource_id "
        f"CROSS JOIN {codings} "
        "WHERE pr.resource_type = 'Patient' AND pr.crm_id = patients.id "
        "AND c.resource_type = 'Condition' AND c.deleted = :not_deleted "
        f"AND {code} IN ({placeholders})" + (" AND c.date >= :since" if since else "") + ")"
    ).bindparams(*([bindparam("since", since, type_=UTCDateTime)] if since else []), not_deleted=False, **params)


def _latest_consent_granted(purpose: ConsentPurpose, channels: list[str]):
    """EXISTS a consent row of the outer patient that is the latest of its (channel, purpose) and
    says granted."""
    later = aliased(Consent)
    newer = exists(select(literal(1)).select_from(later).where(
        later.patient_id == Consent.patient_id, later.channel == Consent.channel, later.purpose == Consent.purpose,
        or_(later.recorded_at > Consent.recorded_at,
            and_(later.recorded_at == Consent.recorded_at, later.id > Consent.id))))
    query = select(literal(1)).select_from(Consent).where(
        Consent.patient_id == Patient.id, Consent.purpose == purpose, Consent.status == ConsentStatus.granted,
        ~newer)
    if channels:
        query = query.where(Consent.channel.in_(channels))
    return exists(query)


def compile_segment(filters: SegmentFilters, *, dialect: str, today: date, zone: ZoneInfo) -> Select:
    """SELECT patients.id of the patients in the segment."""
    query = select(Patient.id)
    if filters.age_min is not None:
        query = query.where(Patient.birth_date <= years_before(today, filters.age_min))
    if filters.age_max is not None:
        query = query.where(Patient.birth_date > years_before(today, filters.age_max + 1))
    if filters.sex:
        query = query.where(Patient.sex.in_(filters.sex))
    if filters.languages:
        query = query.where(Patient.preferred_language.in_(filters.languages))
    if filters.conditions:
        query = query.where(_condition_clause(dialect, filters.conditions))
    if filters.last_visit_after:
        query = query.where(_visits_on_or_after(_local_midnight(filters.last_visit_after, zone)))
    if filters.last_visit_before:
        query = query.where(_visits_on_or_after(None),
                            ~_visits_on_or_after(_local_midnight(filters.last_visit_before, zone)))
    if filters.departments or filters.practitioners:
        seen = (select(literal(1)).select_from(Appointment)
                .join(Practitioner, Practitioner.id == Appointment.practitioner_id)
                .join(Department, Department.id == Practitioner.department_id)
                .where(Appointment.patient_id == Patient.id, Appointment.status == AppointmentStatus.fulfilled))
        if filters.departments:
            seen = seen.where(Department.code.in_(filters.departments))
        if filters.practitioners:
            seen = seen.where(Practitioner.code.in_(filters.practitioners))
        query = query.where(exists(seen))
    if filters.tags:
        query = query.where(exists(select(literal(1)).select_from(PatientTag).where(
            PatientTag.patient_id == Patient.id, PatientTag.tag.in_(filters.tags))))
    if filters.channels:
        reachable = exists(select(literal(1)).select_from(ChannelIdentity).where(
            ChannelIdentity.patient_id == Patient.id, ChannelIdentity.channel.in_(filters.channels)))
        if "sms" in filters.channels:
            reachable = or_(reachable, Patient.phone.is_not(None))
        query = query.where(reachable)
    if filters.marketing_consent:
        query = query.where(_latest_consent_granted(ConsentPurpose.marketing, filters.channels))
    return query


def _dialect(session: AsyncSession) -> str:
    return session.bind.dialect.name


def segment_query(session: AsyncSession, filters: SegmentFilters, zone: str, today: date | None = None) -> Select:
    tz = ZoneInfo(zone)
    return compile_segment(filters, dialect=_dialect(session), today=today or datetime.now(tz).date(), zone=tz)


async def count(session: AsyncSession, filters: SegmentFilters, zone: str, today: date | None = None) -> int:
    query = segment_query(session, filters, zone, today)
    return await session.scalar(select(func.count()).select_from(query.subquery()))


async def patient_ids(session: AsyncSession, filters: SegmentFilters, zone: str,
                      today: date | None = None) -> list[int]:
    query = segment_query(session, filters, zone, today).order_by(Patient.id)
    return list((await session.scalars(query)).all())


async def with_condition(session: AsyncSession, codes: list[str], since: datetime) -> list[int]:
    """Patients with one of `codes` recorded or begun since `since` (a condition drip's enrolment)."""
    query = select(Patient.id).where(_condition_clause(_dialect(session), codes, since)).order_by(Patient.id)
    return list((await session.scalars(query)).all())


async def known_values(session: AsyncSession) -> dict:
    """What the segment builder offers: tags in use, departments, doctors (codes and names)."""
    tags = (await session.scalars(select(PatientTag.tag).group_by(PatientTag.tag).order_by(PatientTag.tag))).all()
    departments = (await session.execute(select(Department.code, Department.name_en, Department.name_ar)
                                         .order_by(Department.name_en))).all()
    practitioners = (await session.execute(select(Practitioner.code, Practitioner.name_en, Practitioner.name_ar)
                                           .order_by(Practitioner.name_en))).all()
    return {"tags": list(tags), "departments": departments, "practitioners": practitioners}


def parse_filters(data: dict) -> SegmentFilters:
    """Filters from a form or JSON body (ValueError with a readable message when invalid)."""
    try:
        return SegmentFilters.model_validate({k: v for k, v in data.items() if k in SegmentFilters.model_fields})
    except Exception as exc:  # pydantic's ValidationError, shown to the marketer
        raise ValueError(str(exc).split("\n", 1)[-1].strip()) from None
