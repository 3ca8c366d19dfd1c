"""Consent ↔ consents row: may the hospital message this patient, on this channel, for this purpose?

Each CRM row is one recorded decision. An opt-out is itself an active consent directive whose
provision denies (policy rule OPTOUT); marking it "inactive" would tell an EHR that the opt-out is
over. So `status` says whether the row is still the one in force (a later row supersedes it), and
`provision.type` says permit or deny."""
from __future__ import annotations

from typing import Any

from fhir.resources.R4B.consent import Consent as FhirConsent

from crm_store.models import Consent, ConsentPurpose, ConsentStatus
from ehr import identifiers
from ehr.resources import (
    as_dict,
    channel_medium,
    codes,
    concept_text,
    find_identifier,
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

CONSENT_SCOPE = "http://terminology.hl7.org/CodeSystem/consentscope"
ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
ACT_REASON = "http://terminology.hl7.org/CodeSystem/v3-ActReason"
LOINC = "http://loinc.org"

# Purposes of use (v3 ActReason): campaigns are health-care marketing (HMARKT); appointment
# messages and answers are health-care operations (HOPERAT).
_PURPOSES = {ConsentPurpose.marketing: ("HMARKT", "healthcare marketing"),
             ConsentPurpose.transactional: ("HOPERAT", "healthcare operations")}
_PURPOSE_CODES = {code: purpose for purpose, (code, _) in _PURPOSES.items()}


def to_fhir(consent: Consent, *, patient_ref: str, organization_ref: str | None = None, in_force: bool = True,
            resource_id: str | None = None) -> dict:
    """Build the Consent of a consents row; `in_force=False` for a row a later one superseded."""
    purpose = ConsentPurpose(consent.purpose)
    granted = ConsentStatus(consent.status) is ConsentStatus.granted
    code, display = _PURPOSES[purpose]
    return validated(FhirConsent, {
        "resourceType": "Consent",
        **({"id": resource_id} if resource_id else {}),
        **({"identifier": [identifier(identifiers.CONSENT, consent.id)]} if consent.id is not None else {}),
        "status": "active" if in_force else "inactive",
        "scope": {"coding": [{"system": CONSENT_SCOPE, "code": "patient-privacy", "display": "Privacy Consent"}]},
        "category": [{"coding": [{"system": LOINC, "code": "59284-0", "display": "Patient Consent"}],
                      "text": f"{purpose.value} messages"}],
        "patient": reference(patient_ref),
        **({"dateTime": instant(consent.recorded_at)} if consent.recorded_at else {}),
        **({"organization": [reference(organization_ref)]} if organization_ref else {}),
        # How the decision was made: a keyword, a form, a provider's unsubscribe report.
        **({"sourceAttachment": {"title": consent.source}} if consent.source else {}),
        "policyRule": {"coding": [{"system": ACT_CODE, "code": "OPTIN" if granted else "OPTOUT"}]},
        "provision": {
            "type": "permit" if granted else "deny",
            "purpose": [{"system": ACT_REASON, "code": code, "display": display}],
            # The channel the decision is about, as the medium of the messages it covers.
            "code": [channel_medium(consent.channel)],
        },
    })


def from_fhir(resource: Any) -> dict:
    """Consent columns of a Consent: granted when it permits (or opts in), revoked when it denies."""
    res = as_dict(resource)
    provision = res.get("provision") if isinstance(res.get("provision"), dict) else {}
    rules = [code for _, code in codes(res.get("policyRule"))]
    if provision.get("type") in ("permit", "deny"):
        granted = provision["type"] == "permit"
    elif "OPTIN" in rules or "OPTOUT" in rules:
        granted = "OPTIN" in rules
    else:
        granted = res.get("status") == "active"
    purpose = None
    for coding in listed(provision.get("purpose")):
        purpose = purpose or _PURPOSE_CODES.get(coding.get("code"))
    if purpose is None:
        text = " ".join(concept_text(c) or "" for c in listed(res.get("category"))).lower()
        purpose = next((p for p in ConsentPurpose if p.value in text), None)
    channel = next((medium_channel(c) for c in listed(provision.get("code"))), None)
    source = res.get("sourceAttachment") if isinstance(res.get("sourceAttachment"), dict) else {}
    return {
        "sila_id": int_or_none(find_identifier(res, identifiers.CONSENT)),
        "patient_ref": ref_of(res.get("patient")),
        "channel": channel,
        "purpose": purpose,
        "status": ConsentStatus.granted if granted else ConsentStatus.revoked,
        "source": source.get("title"),
        "recorded_at": parse_datetime(res.get("dateTime")),
        "in_force": res.get("status") == "active",
    }
