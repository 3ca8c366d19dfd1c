"""Segment counts equal hand-written SQL over the same generated patients, on SQLite and PostgreSQL.

The truth queries are written independently of campaigns/segments.py (window functions for the
latest consent, GROUP BY/MAX for the last visit, each backend's own age arithmetic); the segment
must select exactly the intersection of what they select."""
from __future__ import annotations

import random
from datetime import date, datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import bindparam, text

from campaigns import segments
from crm_store.db import create_engine, sessionmaker
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

ZONE = "Asia/Riyadh"
TODAY = date(2027, 2, 28)  # not a leap year: 29 February birthdays are still to come
CODES = ["44054006", "38341003", "15777000", "195662009"]
CHANNELS = ["sms", "whatsapp", "telegram", "email"]
NOT_A_VISIT = ("planned", "cancelled", "entered-in-error")


@pytest.fixture
async def population(store_url):
    """Two hundred patients with every kind of data a segment looks at, some of it on the edges."""
    engine = create_engine(store_url)
    sessions = sessionmaker(engine)
    rng = random.Random(6)
    async with sessions() as session:
        departments = [Department(code=c, name_en=c.title(), name_ar=c, aliases=[])
                       for c in ("cardiology", "dermatology")]
        session.add_all(departments)
        await session.flush()
        doctors = [Practitioner(code=f"dr-{n}", name_en=f"Dr {n}", name_ar=n, specialty_en="", specialty_ar="",
                                department_id=departments[i % 2].id, aliases=[]) for i, n in enumerate("abc")]
        session.add_all(doctors)
        await session.flush()
        used_slots = set()
        edge_birthdays = [date(2000, 2, 29), date(2009, 2, 28), date(2009, 3, 1), date(1987, 2, 28), date(1986, 3, 1)]
        for i in range(200):
            birth = edge_birthdays[i] if i < len(edge_birthdays) else (
                None if rng.random() < 0.1 else date(1935, 1, 1) + timedelta(days=rng.randrange(0, 33000)))
            patient = Patient(given_name_en=f"P{i}", preferred_language=rng.choice(["ar", "en"]), birth_date=birth,
                              sex=rng.choice(["male", "female", None, "other"]),
                              phone=f"+9665{i:08d}" if rng.random() < 0.6 else None)
            session.add(patient)
            await session.flush()
            for channel in rng.sample(CHANNELS, rng.randrange(0, 3)):
                session.add(ChannelIdentity(patient_id=patient.id, channel=channel, address=f"{channel}-{patient.id}"))
            base = datetime(2026, 6, 1, tzinfo=timezone.utc)
            for channel in rng.sample(CHANNELS, rng.randrange(0, 3)):
                stamps = [base + timedelta(days=rng.randrange(0, 5)) for _ in range(rng.randrange(1, 4))]
                for stamp in stamps:  # equal timestamps happen: the later row (by id) is in force
                    session.add(Consent(patient_id=patient.id, channel=channel,
                                        purpose=rng.choice(list(ConsentPurpose)),
                                        status=rng.choice(list(ConsentStatus)), source="gen", recorded_at=stamp))
            for tag in rng.sample(["vip", "diabetes-program", "staff"], rng.randrange(0, 3)):
                session.add(PatientTag(patient_id=patient.id, tag=tag))
            if rng.random() < 0.7:
                resource_id = f"pat-{i}"
                session.add(FhirResource(resource_type="Patient", resource_id=resource_id, crm_id=patient.id,
                                         patient_ref=f"Patient/{resource_id}", content={"resourceType": "Patient"}))
                for k in range(rng.randrange(0, 3)):
                    codings = [{"system": "http://snomed.info/sct", "code": c}
                               for c in rng.sample(CODES, rng.choice([1, 1, 2]))]
                    session.add(FhirResource(resource_type="Condition", resource_id=f"cond-{i}-{k}",
                                             patient_ref=f"Patient/{resource_id}", deleted=rng.random() < 0.15,
                                             content={"resourceType": "Condition", "code": {"coding": codings}}))
                for k in range(rng.randrange(0, 3)):
                    when = datetime(2025, 1, 1, tzinfo=timezone.utc) + timedelta(hours=rng.randrange(0, 24 * 700))
                    session.add(FhirResource(resource_type="Encounter", resource_id=f"enc-{i}-{k}", date=when,
                                             patient_ref=f"Patient/{resource_id}", deleted=rng.random() < 0.1,
                                             content={"resourceType": "Encounter", "status": rng.choice(
                                                 ["finished", "finished", "in-progress", "cancelled", "planned"])}))
            for k in range(rng.randrange(0, 3)):
                doctor = rng.choice(doctors)
                step = rng.randrange(0, 50000)
                while (doctor.id, step) in used_slots:
                    step += 1
                used_slots.add((doctor.id, step))
                start = datetime(2025, 1, 1, 5, tzinfo=timezone.utc) + timedelta(minutes=20 * step)
                slot = Slot(practitioner_id=doctor.id, start_at=start, end_at=start + timedelta(minutes=20))
                session.add(slot)
                await session.flush()
                session.add(Appointment(reference=f"SL-{i}-{k}", patient_id=patient.id, practitioner_id=doctor.id,
                                        slot_id=slot.id, source_channel="desk", history=[],
                                        status=rng.choice(list(AppointmentStatus))))
        # A patient who is not in the FHIR store but whose Condition is (no crm_id): never matches.
        session.add(FhirResource(resource_type="Condition", resource_id="orphan", patient_ref="Patient/nobody",
                                 content={"code": {"coding": [{"code": CODES[0]}]}}))
        await session.commit()
    yield sessions
    await engine.dispose()


def midnight(day: date) -> datetime:
    return datetime.combine(day, time(), ZoneInfo(ZONE)).astimezone(timezone.utc)


async def truth(session, sql: str, **params) -> set[int]:
    """Patient ids from a hand-written query (lists expand; datetimes bind as the store keeps them)."""
    binds = []
    for name, value in params.items():
        if isinstance(value, (list, tuple)):
            binds.append(bindparam(name, value, expanding=True))
        elif isinstance(value, datetime):
            binds.append(bindparam(name, value, type_=UTCDateTime))
        else:
            binds.append(bindparam(name, value))
    return set((await session.scalars(text(sql).bindparams(*binds))).all())


def dialect_sql(session, sqlite: str, postgres: str) -> str:
    return postgres if session.bind.dialect.name == "postgresql" else sqlite


async def truth_for(session, f: segments.SegmentFilters) -> set[int]:
    everyone = await truth(session, "SELECT id FROM patients")
    sets = [everyone]
    if f.age_min is not None or f.age_max is not None:
        age = dialect_sql(
            session,
            "(CAST(strftime('%Y', :today) AS INTEGER) - CAST(strftime('%Y', birth_date) AS INTEGER)"
            " - (strftime('%m-%d', :today) < strftime('%m-%d', birth_date)))",
            "CAST(date_part('year', age(CAST(:today AS date), birth_date)) AS INTEGER)")
        sets.append(await truth(session, f"SELECT id FROM patients WHERE birth_date IS NOT NULL AND {age} "
                                         "BETWEEN :lo AND :hi", today=TODAY.isoformat(), lo=f.age_min or 0,
                                hi=999 if f.age_max is None else f.age_max))
    if f.sex:
        sets.append(await truth(session, "SELECT id FROM patients WHERE sex IN :v", v=f.sex))
    if f.languages:
        sets.append(await truth(session, "SELECT id FROM patients WHERE preferred_language IN :v", v=f.languages))
    if f.conditions:
        codings = dialect_sql(session, "json_each(c.content, '$.code.coding') AS j",
                              "json_array_elements(c.content -> 'code' -> 'coding') AS j")
        code = dialect_sql(session, "json_extract(j.value, '$.code')", "j ->> 'code'")
        sets.append(await truth(session, f"""
            SELECT DISTINCT p.crm_id FROM fhir_resources c
            JOIN fhir_resources p ON p.resource_type = 'Patient' AND c.patient_ref = 'Patient/' || p.resource_id
            CROSS JOIN {codings}
            WHERE c.resource_type = 'Condition' AND c.deleted = :no AND p.crm_id IS NOT NULL AND {code} IN :codes""",
                                no=False, codes=f.conditions))
    if f.last_visit_after or f.last_visit_before:
        status = dialect_sql(session, "json_extract(e.content, '$.status')", "e.content ->> 'status'")
        visits = f"""
            SELECT pid FROM (
              SELECT a.patient_id AS pid, s.start_at AS at FROM appointments a JOIN slots s ON s.id = a.slot_id
              WHERE a.status = 'fulfilled'
              UNION ALL
              SELECT p.crm_id, e.date FROM fhir_resources e
              JOIN fhir_resources p ON p.resource_type = 'Patient' AND e.patient_ref = 'Patient/' || p.resource_id
              WHERE e.resource_type = 'Encounter' AND e.deleted = :no AND e.date IS NOT NULL
                AND {status} NOT IN :not_visits) v
            WHERE pid IS NOT NULL GROUP BY pid HAVING """
        if f.last_visit_after:
            sets.append(await truth(session, visits + "MAX(at) >= :d", no=False, not_visits=NOT_A_VISIT,
                                    d=midnight(f.last_visit_after)))
        if f.last_visit_before:
            sets.append(await truth(session, visits + "MAX(at) < :d", no=False, not_visits=NOT_A_VISIT,
                                    d=midnight(f.last_visit_before)))
    if f.departments or f.practitioners:
        sql = """SELECT DISTINCT a.patient_id FROM appointments a JOIN practitioners pr ON pr.id = a.practitioner_id
                 JOIN departments d ON d.id = pr.department_id WHERE a.status = 'fulfilled'"""
        params = {}
        if f.departments:
            sql += " AND d.code IN :deps"
            params["deps"] = f.departments
        if f.practitioners:
            sql += " AND pr.code IN :docs"
            params["docs"] = f.practitioners
        sets.append(await truth(session, sql, **params))
    if f.tags:
        sets.append(await truth(session, "SELECT patient_id FROM patient_tags WHERE tag IN :v", v=f.tags))
    if f.channels:
        sql = "SELECT patient_id FROM channel_identities WHERE channel IN :v"
        if "sms" in f.channels:
            sql += " UNION SELECT id FROM patients WHERE phone IS NOT NULL"
        sets.append(await truth(session, sql, v=f.channels))
    if f.marketing_consent:
        sql = """SELECT patient_id FROM (
                   SELECT patient_id, channel, status, ROW_NUMBER() OVER (
                     PARTITION BY patient_id, channel, purpose ORDER BY recorded_at DESC, id DESC) AS rn
                   FROM consents WHERE purpose = 'marketing') latest
                 WHERE rn = 1 AND status = 'granted'"""
        params = {}
        if f.channels:
            sql += " AND channel IN :v"
            params["v"] = f.channels
        sets.append(await truth(session, sql, **params))
    return set.intersection(*sets)


CASES = [
    {},
    {"age_min": 18, "age_max": 40},
    {"age_min": 27, "age_max": 27},  # the 29 February birthday is not yet 27 on 28 February 2027
    {"age_min": 18},
    {"age_max": 17},
    {"age_min": 40, "age_max": 41},  # born 28 Feb 1987 and 1 March 1986 on either side
    {"sex": ["female"], "languages": ["en"]},
    {"conditions": ["44054006"]},
    {"conditions": ["38341003", "15777000"]},
    {"last_visit_after": "2026-03-01"},
    {"last_visit_before": "2026-03-01"},
    {"last_visit_after": "2025-09-01", "last_visit_before": "2026-09-01"},
    {"departments": ["cardiology"]},
    {"practitioners": ["dr-b"]},
    {"departments": ["dermatology"], "practitioners": ["dr-b", "dr-c"]},
    {"tags": ["vip"]},
    {"tags": ["vip", "staff"]},
    {"channels": ["whatsapp"]},
    {"channels": ["sms"]},
    {"marketing_consent": True},
    {"marketing_consent": True, "channels": ["sms", "whatsapp"]},
    {"age_min": 30, "sex": ["male"], "conditions": ["38341003"], "channels": ["sms", "telegram"],
     "marketing_consent": True, "last_visit_after": "2025-06-01"},
    {"languages": ["ar"], "tags": ["diabetes-program"], "departments": ["cardiology"]},
]


async def test_segment_counts_equal_hand_written_sql(population):
    async with population() as session:
        checked = 0
        for case in CASES:
            filters = segments.parse_filters(case)
            expected = await truth_for(session, filters)
            assert await segments.count(session, filters, ZONE, TODAY) == len(expected), case
            assert set(await segments.patient_ids(session, filters, ZONE, TODAY)) == expected, case
            checked += bool(expected)
        assert checked >= len(CASES) - 3  # the population gives nearly every case some patients


def test_filters_read_forms_and_refuse_nonsense():
    f = segments.parse_filters({"conditions": "44054006، 38341003", "tags": " vip , ", "age_min": "",
                                "sex": ["female"]})
    assert f.conditions == ["44054006", "38341003"] and f.tags == ["vip"] and f.age_min is None
    for bad in ({"age_min": -1}, {"sex": ["robot"]}, {"channels": ["pigeon"]}, {"last_visit_after": "soon"}):
        with pytest.raises(ValueError):
            segments.parse_filters(bad)
    assert segments.years_before(date(2028, 2, 29), 1) == date(2027, 2, 28)
