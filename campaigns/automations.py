"""Automations: rules that owe patients a message when something happens or a time comes.

Every run (SILA_AUTOMATION_INTERVAL) each enabled rule records what it owes as `automation_sends`
rows, unique per rule and occasion (an appointment and a reminder offset, a birthday's year, a
drip step), so an occasion is never sent twice whatever the number of workers or restarts; then
the rows that are due are decided and queued in the outbox like campaign messages (channel
preference, consent, frequency cap for marketing, quiet hours).

- appointment_reminder {offsets_hours: [24, 2]}: before each booked appointment; only the nearest
  offset that is due is sent (after a downtime, one reminder rather than two), none for an offset
  the booking was made inside of (booked three hours ahead: no 24-hour reminder), none after the
  patient answered an earlier one, and none once the visit has begun.
- noshow_followup {delay_hours, lookback_days}: after an appointment marked no-show.
- post_visit {delay_hours, lookback_days}: after a fulfilled appointment's end.
- birthday {hour}: on the patient's birthday from that local hour (29 February: 28 February in
  other years).
- condition_drip {codes, enroll_within_days, steps: [{after_days, template}]}: a patient with one
  of the condition codes recorded in the last `enroll_within_days` is enrolled once; each step is
  due `after_days` after enrolment.
"""
from __future__ import annotations

import calendar
import logging
from collections import defaultdict
from datetime import datetime, time, timedelta

from sqlalchemy import extract, or_, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import selectinload

from campaigns import delivery, reminders, segments
from crm_store.models import (
    Appointment,
    AppointmentStatus,
    AutomationRule,
    AutomationSend,
    CampaignTemplate,
    Patient,
    Practitioner,
    Segment,
    Slot,
)

log = logging.getLogger(__name__)
KINDS = ("appointment_reminder", "noshow_followup", "post_visit", "birthday", "condition_drip")
BATCH = 200


def _insert_ignoring_duplicates(session: AsyncSession):
    dialect = postgresql if session.bind.dialect.name == "postgresql" else sqlite
    return dialect.insert(AutomationSend).on_conflict_do_nothing(index_elements=["rule_id", "key"])


def _appointments():
    return select(Appointment).join(Slot, Slot.id == Appointment.slot_id).options(
        selectinload(Appointment.slot),
        selectinload(Appointment.practitioner).selectinload(Practitioner.department))


def booked_at(appointment: Appointment) -> datetime:
    """When the patient settled on this time: the last move, else the booking."""
    if appointment.history:
        return datetime.fromisoformat(appointment.history[-1]["at"])
    return appointment.created_at


class Automations:
    def __init__(self, runtime):
        self.rt = runtime

    async def run_once(self) -> int:
        """Record what every enabled rule owes, then queue what is due; the number queued."""
        now = self.rt.now()
        async with self.rt.sessions() as session:
            rules = (await session.scalars(select(AutomationRule).where(AutomationRule.enabled)
                                           .order_by(AutomationRule.id))).all()
        for rule in rules:
            try:
                async with self.rt.sessions() as session:
                    rows = await self.owed(session, rule, now)
                    if rows:
                        await session.execute(_insert_ignoring_duplicates(session), rows)
                    await session.commit()
            except Exception:  # one rule's bad configuration must not stop the others
                log.exception("automation %s failed", rule.key)
        queued = 0
        while True:
            done, ids = await self.send_due(now)
            queued += len(ids)
            if ids:
                self.rt.outbox.wakeup.set()
            if done < BATCH:
                return queued

    async def owed(self, session: AsyncSession, rule: AutomationRule, now: datetime) -> list[dict]:
        config = rule.config or {}
        found = await getattr(self, f"_{rule.kind}")(session, rule, config, now)
        if rule.segment_id and found:
            segment = await session.get(Segment, rule.segment_id)
            members = set(await segments.patient_ids(session, segments.parse_filters(segment.filters or {}),
                                                     self.rt.settings.timezone, now.astimezone(self.rt.zone).date()))
            found = [row for row in found if row["patient_id"] in members]
        for row in found:
            row.setdefault("rule_id", rule.id)
            row.setdefault("template_id", rule.template_id)
            row.setdefault("status", "pending")
            row.setdefault("due_at", now)
            row.setdefault("created_at", now)
        return found

    async def _appointment_reminder(self, session, rule, config, now) -> list[dict]:
        offsets = sorted({float(h) for h in config.get("offsets_hours") or [24, 2]}, reverse=True)
        answered = set((await session.scalars(select(AutomationSend.appointment_id).where(
            AutomationSend.rule_id == rule.id, AutomationSend.answer.is_not(None)))).all())
        rows = []
        for i, hours in enumerate(offsets):
            nearer = offsets[i + 1] if i + 1 < len(offsets) else 0.0
            due = (await session.scalars(_appointments().where(
                Appointment.status == AppointmentStatus.booked,
                Slot.start_at > now + timedelta(hours=nearer), Slot.start_at <= now + timedelta(hours=hours)))).all()
            for appointment in due:
                start = appointment.slot.start_at
                if appointment.id in answered or booked_at(appointment) > start - timedelta(hours=hours):
                    continue
                rows.append({"patient_id": appointment.patient_id, "appointment_id": appointment.id,
                             "key": f"reminder:{appointment.id}:{start.isoformat()}:{hours:g}h", "not_after": start})
        return rows

    async def _noshow_followup(self, session, rule, config, now) -> list[dict]:
        delay, lookback = timedelta(hours=config.get("delay_hours", 2)), timedelta(days=config.get("lookback_days", 7))
        found = (await session.scalars(_appointments().where(
            Appointment.status == AppointmentStatus.noshow,
            Slot.start_at <= now - delay, Slot.start_at > now - lookback))).all()
        return [{"patient_id": a.patient_id, "appointment_id": a.id, "key": f"noshow:{a.id}",
                 "not_after": a.slot.start_at + lookback} for a in found]

    async def _post_visit(self, session, rule, config, now) -> list[dict]:
        delay, lookback = timedelta(hours=config.get("delay_hours", 3)), timedelta(days=config.get("lookback_days", 3))
        found = (await session.scalars(_appointments().where(
            Appointment.status == AppointmentStatus.fulfilled,
            Slot.end_at <= now - delay, Slot.end_at > now - lookback))).all()
        return [{"patient_id": a.patient_id, "appointment_id": a.id, "key": f"visit:{a.id}",
                 "not_after": a.slot.end_at + lookback} for a in found]

    async def _birthday(self, session, rule, config, now) -> list[dict]:
        local = now.astimezone(self.rt.zone)
        if local.hour < int(config.get("hour", 10)):
            return []
        days = [(local.month, local.day)]
        if (local.month, local.day) == (2, 28) and not calendar.isleap(local.year):
            days.append((2, 29))
        match = or_(*[(extract("month", Patient.birth_date) == m) & (extract("day", Patient.birth_date) == d)
                      for m, d in days])
        ids = (await session.scalars(select(Patient.id).where(Patient.birth_date.is_not(None), match))).all()
        end_of_day = datetime.combine(local.date() + timedelta(days=1), time(), self.rt.zone)
        return [{"patient_id": pid, "key": f"birthday:{pid}:{local.year}", "not_after": end_of_day} for pid in ids]

    async def _condition_drip(self, session, rule, config, now) -> list[dict]:
        codes = [str(c) for c in config.get("codes") or []]
        steps = config.get("steps") or [{"after_days": 0, "template": None}]
        if not codes:
            return []
        since = now - timedelta(days=int(config.get("enroll_within_days", 30)))
        candidates = await segments.with_condition(session, codes, since)
        enrolled = set((await session.scalars(select(AutomationSend.patient_id).where(
            AutomationSend.rule_id == rule.id))).all())
        names = {s.get("template") for s in steps if s.get("template")}
        template_ids = dict((await session.execute(select(CampaignTemplate.name, CampaignTemplate.id).where(
            CampaignTemplate.name.in_(names)))).all()) if names else {}
        rows = []
        for pid in candidates:
            if pid in enrolled:
                continue
            for number, step in enumerate(steps):
                rows.append({"patient_id": pid, "key": f"drip:{pid}:{number}",
                             "template_id": template_ids.get(step.get("template"), rule.template_id),
                             "due_at": now + timedelta(days=float(step.get("after_days", 0)))})
        return rows

    async def send_due(self, now: datetime) -> tuple[int, list[int]]:
        """Decide and queue up to BATCH due sends in one transaction: (rows looked at, message ids)."""
        async with self.rt.sessions() as session:
            due = (await session.scalars(
                select(AutomationSend).join(AutomationRule, AutomationRule.id == AutomationSend.rule_id)
                .where(AutomationSend.status == "pending", AutomationSend.due_at <= now, AutomationRule.enabled)
                .order_by(AutomationSend.due_at, AutomationSend.id).limit(BATCH))).all()
            if not due:
                return 0, []
            rules = {r.id: r for r in (await session.scalars(select(AutomationRule).where(
                AutomationRule.id.in_({d.rule_id for d in due})))).all()}
            template_rows = (await session.scalars(select(CampaignTemplate).where(
                CampaignTemplate.id.in_({d.template_id for d in due if d.template_id})))).all()
            templates = {t.id: t for t in template_rows}
            appointment_ids = {d.appointment_id for d in due if d.appointment_id}
            appointments = {a.id: a for a in (await session.scalars(
                _appointments().where(Appointment.id.in_(appointment_ids)))).all()} if appointment_ids else {}
            groups = defaultdict(list)
            for send in due:
                groups[(send.rule_id, send.template_id)].append(send)
            queued: list[int] = []
            for (rule_id, template_id), sends in groups.items():
                rule, template = rules[rule_id], templates.get(template_id)
                if template is None:
                    await delivery.mark(session, AutomationSend, [s.id for s in sends],
                                        [delivery.Decision("skipped", "no_template")] * len(sends), now)
                    continue
                items = [self._item(send, appointments.get(send.appointment_id), rule) for send in sends]
                decisions = await delivery.plan(
                    session, self.rt.policy, items, template, rule.channels or [], now,
                    buttons=reminders.buttons if rule.kind == "appointment_reminder" else None,
                    journey=("automation_message", rule.key))
                queued += await delivery.mark(session, AutomationSend, [s.id for s in sends], decisions, now)
            await session.commit()
        return len(due), queued

    @staticmethod
    def _item(send: AutomationSend, appointment: Appointment | None, rule: AutomationRule) -> delivery.Item:
        not_after = send.not_after
        if rule.kind == "appointment_reminder" and appointment is not None and (
                appointment.status != AppointmentStatus.booked or appointment.slot.start_at != send.not_after):
            not_after = send.created_at  # cancelled or moved since: this reminder is void
        return delivery.Item(send.patient_id, appointment, not_after)

