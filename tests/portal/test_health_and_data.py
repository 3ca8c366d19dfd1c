"""My health (the clinical summary the EHR import filled, abnormal values marked in words as well
as colour) and my data (everything Sila holds about the patient, as one FHIR bundle)."""
from __future__ import annotations

import json
import re

from fhir.resources.R4B.bundle import Bundle
from sqlalchemy import select

from crm_store.models import FhirResource
from tests.portal.conftest import GAYLA_BORN, GAYLA_PHONE, ROYAL_BORN, ROYAL_PHONE
from tests.portal.helpers import PortalUser

GAYLA = "77155e2b-5d21-4b47-86f0-4004183d68b2"  # her Patient.id in the Synthea bundle


async def test_results_with_ranges_and_abnormal_values_marked(client, hub, fake, imported):
    user = PortalUser(client, fake)
    await user.sign_in(ROYAL_PHONE, ROYAL_BORN)  # her record came from the EHR: no channel identity yet
    page = await (await client.get("/portal/health")).text()
    latest = page.split('id="latest-results"')[1].split("</table>")[0]
    rows = re.findall(r'<tr class="result( abnormal)?">(.*?)</tr>', latest, re.S)
    abnormal = [body for flag, body in rows if flag]
    normal = [body for flag, body in rows if not flag]
    hemoglobin = next(b for b in abnormal if "Hemoglobin [Mass/volume] in Blood" in b)
    # Marked in words, not by colour alone: the flag and "outside the normal range", with the range.
    assert "Low — outside the normal range" in hemoglobin and "12.1 g/dL" in hemoglobin
    assert "13.2–16.6 g/dL" in hemoglobin
    assert any("High — outside the normal range" in b and "Blood Pressure" in b for b in abnormal)
    assert normal and not any("outside the normal range" in b for b in normal)
    for section in ("conditions", "medications", "immunizations", "care-team", "coverage", "encounters", "reports"):
        assert f'id="{section}"' in page
    home = await (await client.get("/portal")).text()
    assert "3 recent results are outside the normal range" in home

    await user.post("/portal/preferences/language", {"language": "ar"})
    arabic = await (await client.get("/portal/health")).text()
    assert 'dir="rtl"' in arabic and "منخفض — خارج المعدل الطبيعي" in arabic and "التطعيمات" in arabic


async def test_my_data_is_a_fhir_bundle_of_everything_about_me_only(client, hub, fake, imported):
    user = PortalUser(client, fake)
    await user.sign_in(GAYLA_PHONE, GAYLA_BORN)
    await user.post("/portal/messages", {"text": "Please call me about my results", "nonce": "n1"})
    page = await (await client.get("/portal/appointments/new?department=cardiology")).text()
    slot = re.search(r'name="slot" value="(\d+)"', page).group(1)
    await user.post("/portal/appointments/hold", {"slot": slot})
    await user.post("/portal/appointments/book", {"slot": slot})
    await user.post("/portal/preferences/consent", {"channel": "sms", "purpose": "marketing", "status": "granted"})

    response = await client.get("/portal/data/export")
    assert response.status == 200 and response.content_type == "application/fhir+json"
    assert "attachment" in response.headers["Content-Disposition"]
    bundle = json.loads(await response.read())
    Bundle.model_validate(bundle)  # a valid R4 bundle
    assert bundle["type"] == "collection"
    resources = [e["resource"] for e in bundle["entry"]]
    by_type: dict[str, list[dict]] = {}
    for resource in resources:
        by_type.setdefault(resource["resourceType"], []).append(resource)
    assert [p["id"] for p in by_type["Patient"]] == [GAYLA]
    assert len(by_type["Observation"]) == 105 and len(by_type["Condition"]) == 6
    assert len(by_type["Immunization"]) == 11 and len(by_type["MedicationRequest"]) == 7
    [appointment] = by_type["Appointment"]
    assert appointment["status"] == "booked"
    assert {"actor": {"reference": f"Patient/{GAYLA}"}} in [{"actor": {"reference": p["actor"].get("reference")}}
                                                            for p in appointment["participant"]]
    payloads = [c["payload"][0]["contentString"] for c in by_type["Communication"] if c.get("payload")]
    assert "Please call me about my results" in payloads
    assert any("Your appointment is booked" in p for p in payloads)
    assert not any(re.search(r"(?<!\d)\d{6}(?!\d)", p) and "portal code" in p for p in payloads)  # codes redacted
    consents = by_type["Consent"]
    assert any(c["provision"]["type"] == "permit" and c["status"] == "active"
               and c["provision"]["purpose"][0]["code"] == "HMARKT" for c in consents)
    # Every reference inside points at something in the bundle.
    present = {f"{r['resourceType']}/{r['id']}" for r in resources}
    references = set(re.findall(r'"reference": "([A-Za-z]+/[^"]+)"', json.dumps(bundle)))
    dangling = {r for r in references if r.split("/")[0] != "Slot" and r not in present}
    assert not dangling, dangling
    # Nothing of the other patients.
    async with hub.sessions() as session:
        others = (await session.scalars(select(FhirResource.resource_id).where(
            FhirResource.resource_type == "Patient", FhirResource.resource_id != GAYLA))).all()
    text = json.dumps(bundle)
    assert others and not any(other in text for other in others)
    assert "Royal" not in text and "Weissnat" not in text


async def test_surveys_waiting_for_an_answer_are_listed(client, hub, fake):
    from datetime import date, timedelta

    from crm_store.models import Survey, SurveyResponse, utcnow
    from tests.portal.conftest import add_patient

    patient = await add_patient(hub, "+966501234567", date(1985, 3, 14))
    async with hub.sessions() as session:
        survey = Survey(code="after-visit", title_en="How was your visit?", title_ar="كيف كانت زيارتك؟",
                        definition={"questions": []})
        session.add(survey)
        await session.flush()
        for status, expires in (("sent", timedelta(days=3)), ("completed", timedelta(days=3)),
                                ("sent", timedelta(days=-1))):
            session.add(SurveyResponse(survey_id=survey.id, survey_code=survey.code, survey_version=1,
                                       patient_id=patient.id, channel="sms", language="en",
                                       reason="visit", occasion=f"visit:{status}{expires.days}", status=status,
                                       expires_at=utcnow() + expires))
        await session.commit()
    user = PortalUser(client, fake)
    await user.sign_in("+966501234567", date(1985, 3, 14))
    home = await (await client.get("/portal")).text()
    listed = home.split('id="surveys"')[1].split("</section>")[0]
    assert listed.count("How was your visit?") == 1 and "Answer it in your SMS conversation." in listed
