"""The patient profile in the console shows the clinical summary the EHR import brought: active
conditions, medications, abnormal results with their reference range, the payer."""
from __future__ import annotations

from bot.app import HUB
from bot.settings import ROOT
from channels.base import InboundMessage
from crm_store.models import Conversation, ConversationStatus
from ehr.importer import import_path
from tests.inbox.test_console import client, sign_in  # noqa: F401  (the console fixture)

GAYLA_BUNDLE = ROOT / "tests" / "fixtures" / "fhir" / "Gayla_Ferry_259bc6c6-9c1d-43e9-bd25-7539cf07f8ac.json"


async def test_an_agent_sees_the_summary_of_a_patient_the_ehr_knows(client):  # noqa: F811
    hub = client.app[HUB]
    await import_path(hub.sessions, GAYLA_BUNDLE)
    received = await hub.router.receive(InboundMessage("sms", "+15556058177", "I need a person", "SM-1"), wait=False)
    async with hub.sessions() as session:
        (await session.get(Conversation, received.conversation_id)).status = ConversationStatus.pending_human
        await session.commit()
    await sign_in(client, "amal")

    page = await (await client.get(f"/console/conversations/{received.conversation_id}")).text()
    summary = page[page.index('data-testid="clinical-summary"'):]
    summary = summary[:summary.index("</section>")]
    assert "Coronary Heart Disease" in summary and "Clopidogrel 75 MG Oral Tablet" in summary
    assert 'class="urgent"' in summary and "High" in summary  # an out-of-range result, flagged in words
    assert "medicare" in summary

    # A patient the EHR never mentioned has no summary card at all.
    other = await (await client.get(f"/console/conversations/{client.conversation_id}")).text()
    assert 'data-testid="clinical-summary"' not in other
