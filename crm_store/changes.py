"""Which CRM rows owe a write to FHIR (Sila's own store and the hospital's EHR).

A flush that creates or changes an appointment, records a consent decision, or stores a message
the patient sent or one that reached a final delivery state, queues an `ehr_outbox` row in the same transaction: the write to
the EHR can then fail, wait and be retried, but never be forgotten."""
from __future__ import annotations

from sqlalchemy import event, insert, inspect
from sqlalchemy.orm import Session

from crm_store.models import Appointment, Consent, EhrOutbox, Message

# An outbound message is written to the EHR once its delivery is settled, not while it waits.
UNSETTLED = frozenset({"queued", "sending"})


class CrmSession(Session):
    """The CRM store's sessions: every flush is watched for rows the EHR must hear about."""


def _owed(obj, is_new: bool) -> tuple[str, int] | None:
    if isinstance(obj, Appointment):
        if is_new or any(inspect(obj).attrs[a].history.has_changes() for a in ("status", "slot_id")):
            return "Appointment", obj.id
    elif isinstance(obj, Consent) and is_new:
        return "Consent", obj.id
    elif isinstance(obj, Message) and not obj.private:
        if obj.direction == "in" and is_new:
            return "Communication", obj.id
        if obj.direction == "out" and obj.status not in UNSETTLED and (
                is_new or inspect(obj).attrs.status.history.has_changes()):
            return "Communication", obj.id
    return None


def queue(session, kind: str, crm_id: int) -> None:
    """Queue a write explicitly, for changes made by UPDATE statements the flush does not see."""
    session.add(EhrOutbox(kind=kind, crm_id=crm_id))


@event.listens_for(CrmSession, "after_flush")
def _queue_owed_writes(session: Session, _context) -> None:
    owed = {w for obj in session.new if (w := _owed(obj, True))}
    owed |= {w for obj in session.dirty if (w := _owed(obj, False))}
    if owed:
        session.connection().execute(insert(EhrOutbox), [{"kind": k, "crm_id": i} for k, i in sorted(owed)])
