"""Communication ↔ messages row: every message between the patient and the hospital, in and out."""
from __future__ import annotations

from typing import Any

from fhir.resources.R4B.communication import Communication as FhirCommunication

from crm_store.models import Conversation, Message
from ehr import identifiers
from ehr.resources import (
    as_dict,
    channel_medium,
    concept_text,
    find_identifier,
    has_code,
    identifier,
    instant,
    int_or_none,
    listed,
    medium_channel,
    parse_datetime,
    ref_of,
    reference,
    validated,
)

CATEGORY = "http://terminology.hl7.org/CodeSystem/communication-category"

# Outbound rows are the outbox: queued/sending are still under way, failed was never delivered.
_OUT_STATUS = {"queued": "in-progress", "sending": "in-progress", "failed": "not-done"}


def to_fhir(message: Message, conversation: Conversation, *, patient_ref: str, organization_ref: str | None = None,
            hospital_code: str | None = None, resource_id: str | None = None) -> dict:
    """Build the Communication of a messages row in its conversation.

    The hospital (by `organization_ref`, or its code when its id is not known) is the other party:
    sender of what Sila, a bot or staff sent, recipient of what the patient wrote. A button the
    patient tapped is recorded as what they saw (`display`), not the payload the bot read."""
    inbound = message.direction == "in"
    hospital = None
    if organization_ref or hospital_code:
        hospital = reference(organization_ref,
                             ident=identifier(identifiers.HOSPITAL, hospital_code) if hospital_code else None)
    patient = reference(patient_ref)
    status = "completed" if inbound else _OUT_STATUS.get(message.status, "completed")
    text = message.display or message.text
    when = instant(message.created_at) if message.created_at else None
    parties: dict = {"sender": patient} if inbound else {"recipient": [patient]}
    if hospital:
        parties.update({"recipient": [hospital]} if inbound else {"sender": hospital})
    return validated(FhirCommunication, {
        "resourceType": "Communication",
        **({"id": resource_id} if resource_id else {}),
        **({"identifier": [identifier(identifiers.MESSAGE, message.id)]} if message.id is not None else {}),
        "status": status,
        **({"statusReason": {"text": "delivery failed"}} if status == "not-done" else {}),
        # Campaign messages are notifications; conversational messages carry no category.
        **({"category": [{"coding": [{"system": CATEGORY, "code": "notification"}], "text": "marketing"}]}
           if message.purpose == "marketing" else {}),
        "medium": [channel_medium(message.channel or conversation.channel)],
        "subject": patient,
        **({"language": message.language} if message.language else {}),
        **({"sent": when} if when and not inbound and status != "not-done" else {}),
        **({"received": when} if when and inbound else {}),
        **parties,
        **({"payload": [{"contentString": text}]} if text and text.strip() else {}),
    })


def from_fhir(resource: Any) -> dict:
    """Message columns of a Communication: direction (seen from the hospital), channel, text, time."""
    res = as_dict(resource)
    subject = ref_of(res.get("subject"))
    sender = ref_of(res.get("sender"))
    inbound = bool(sender and subject and sender == subject) or (res.get("received") and not res.get("sent"))
    medium = next(iter(listed(res.get("medium"))), None)
    texts = [p["contentString"] for p in listed(res.get("payload")) if isinstance(p.get("contentString"), str)]
    marketing = any(has_code(c, CATEGORY, "notification") and concept_text(c) == "marketing"
                    for c in listed(res.get("category")))
    return {
        "sila_id": int_or_none(find_identifier(res, identifiers.MESSAGE)),
        "direction": "in" if inbound else "out",
        "channel": medium_channel(medium),
        "text": "\n".join(texts),
        "purpose": "marketing" if marketing else "transactional",
        "language": res.get("language"),
        "created_at": parse_datetime(res.get("received") if inbound else res.get("sent")),
        "patient_ref": subject,
    }
