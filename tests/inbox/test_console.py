"""The staff console's security: sign-in, lockout, sessions, CSRF, roles, and the audit trail."""
from __future__ import annotations

import re
from datetime import timedelta

import pytest
from sqlalchemy import select, update

from bot.app import HUB, create_app
from bot.settings import Settings
from channels.base import InboundMessage
from crm_store.models import (
    AuditEntry,
    Conversation,
    ConversationStatus,
    Message,
    Patient,
    StaffRole,
    StaffSession,
    StaffUser,
    utcnow,
)
from inbox.security import hash_password
from tests.fakes.tcp_proxy import _free_port

PASSWORD = "correct horse battery"


@pytest.fixture
async def client(aiohttp_client, store_url):
    settings = Settings(database_url=store_url, rasa_url=f"http://127.0.0.1:{_free_port()}", rasa_timeout=2,
                        replay_interval=3600)
    client = await aiohttp_client(create_app(settings))
    async with client.app[HUB].sessions() as session:
        for name, role in (("amal", StaffRole.agent), ("mariam", StaffRole.marketer), ("root", StaffRole.admin),
                           ("salma", StaffRole.supervisor)):
            session.add(StaffUser(username=name, display_name=name.title(), password_hash=hash_password(PASSWORD),
                                  role=role, language="en"))
        await session.commit()
    # A patient who asked for a person.
    router = client.app[HUB].router
    received = await router.receive(InboundMessage("webchat", "patient-token", "I need a person", "p-1"))
    async with client.app[HUB].sessions() as session:
        conversation = await session.get(Conversation, received.conversation_id)
        conversation.status = ConversationStatus.pending_human
        await session.commit()
    client.conversation_id = received.conversation_id
    return client


async def sign_in(client, username: str, password: str = PASSWORD):
    page = await (await client.get("/console/login")).text()
    token = re.search(r'name="_csrf" value="([^"]+)"', page).group(1)
    return await client.post("/console/login", data={"_csrf": token, "username": username, "password": password},
                             allow_redirects=False)


async def csrf_of(client, path: str) -> str:
    page = await (await client.get(path)).text()
    return re.search(r'name="_csrf" value="([^"]+)"', page).group(1)


async def audit_rows(client, action: str) -> list[AuditEntry]:
    async with client.app[HUB].sessions() as session:
        return (await session.scalars(select(AuditEntry).where(AuditEntry.action == action))).all()


async def test_sign_in_sets_a_strict_http_only_session_and_a_new_id_each_time(client):
    first = await sign_in(client, "amal")
    assert first.status == 302
    cookie = first.cookies["sila_console"]
    assert cookie["httponly"] and cookie["samesite"] == "Strict"
    second = await sign_in(client, "amal")
    assert second.cookies["sila_console"].value != cookie.value
    assert [r.outcome for r in await audit_rows(client, "login")] == ["ok", "ok"]


async def test_wrong_passwords_lock_the_account(client):
    for _ in range(5):
        assert (await sign_in(client, "amal", "wrong password!")).status == 401
    locked = await sign_in(client, "amal")  # even the right password, while locked
    assert locked.status == 401 and "Too many failed attempts" in await locked.text()
    assert [r.outcome for r in await audit_rows(client, "login")][-1] == "locked"


async def test_login_form_without_its_csrf_token_is_refused(client):
    await client.get("/console/login")
    response = await client.post("/console/login", data={"username": "amal", "password": PASSWORD})
    assert response.status == 403


async def test_state_changes_need_the_csrf_token(client):
    await sign_in(client, "amal")
    path = f"/console/conversations/{client.conversation_id}"
    assert (await client.post(path + "/claim", data={})).status == 403
    assert (await client.post(path + "/claim", data={"_csrf": "forged"})).status == 403
    ok = await client.post(path + "/claim", data={"_csrf": await csrf_of(client, path)}, allow_redirects=False)
    assert ok.status == 302


async def test_idle_sessions_end(client):
    await sign_in(client, "amal")
    assert (await client.get("/console", allow_redirects=False)).status == 200
    async with client.app[HUB].sessions() as session:
        await session.execute(update(StaffSession).values(last_seen_at=utcnow() - timedelta(minutes=31)))
        await session.commit()
    response = await client.get("/console", allow_redirects=False)
    assert response.status == 302 and response.headers["Location"].startswith("/console/login")


async def test_a_marketer_cannot_open_patient_conversations(client):
    await sign_in(client, "mariam")
    assert (await client.get("/console", allow_redirects=False)).status == 403
    assert (await client.get(f"/console/conversations/{client.conversation_id}")).status == 403
    denied = await audit_rows(client, "denied:conversation_view")
    assert denied and denied[0].outcome == "forbidden" and denied[0].username == "mariam"
    assert (await client.get("/console/audit")).status == 403


async def test_agent_reads_claims_replies_notes_and_resolves_with_an_audit_row_each(client):
    await sign_in(client, "amal")
    path = f"/console/conversations/{client.conversation_id}"
    page = await (await client.get(path)).text()
    assert "I need a person" in page
    csrf = re.search(r'name="_csrf" value="([^"]+)"', page).group(1)
    for action, data in (("claim", {}), ("reply", {"text": "Hello, this is Amal from reception."}),
                         ("note", {"text": "Patient sounded worried"}), ("resolve", {})):
        response = await client.post(f"{path}/{action}", data={"_csrf": csrf, **data}, allow_redirects=False)
        assert response.status == 302, action
    async with client.app[HUB].sessions() as session:
        conversation = await session.get(Conversation, client.conversation_id)
        sent = (await session.scalars(select(Message).where(Message.sender == "staff").order_by(Message.id))).all()
        views = (await session.scalars(select(AuditEntry).where(AuditEntry.username == "amal")
                                       .order_by(AuditEntry.id))).all()
    assert conversation.status == ConversationStatus.bot and conversation.assignee is None
    assert [(m.private, m.status) for m in sent] == [(False, "sent"), (True, "note")]
    assert [v.action for v in views] == ["login", "view_conversation", "claim", "reply", "note", "resolve"]
    assert all(v.patient_id == conversation.patient_id for v in views[1:])


async def test_admin_reads_the_audit_log(client):
    await sign_in(client, "root")
    page = await (await client.get("/console/audit")).text()
    assert "login" in page and "root" in page


async def test_canned_replies_are_filled_in_the_patients_language(client):
    async with client.app[HUB].sessions() as session:
        conversation = await session.get(Conversation, client.conversation_id)
        conversation.language = "ar"
        patient = await session.get(Patient, conversation.patient_id)
        patient.given_name_ar, patient.given_name_en = "نورة", "Noura"
        await session.commit()
    await sign_in(client, "amal")  # an English-speaking agent, an Arabic-speaking patient
    page = await (await client.get(f"/console/conversations/{client.conversation_id}")).text()
    greeting = re.search(r'<option value="greeting" data-text="([^"]*)"', page).group(1)
    assert greeting == "أهلًا نورة، معك Amal من مستشفى النور التخصصي. كيف أقدر أساعدك اليوم؟"
    assert "Noura" not in page.split('class="canned"')[1].split("</select>")[0]


async def test_only_supervisors_and_admins_assign(client):
    path = f"/console/conversations/{client.conversation_id}"
    await sign_in(client, "amal")
    refused = await client.post(path + "/assign", data={"_csrf": await csrf_of(client, path), "assignee": "amal"})
    assert refused.status == 403
    assert [(r.username, r.outcome) for r in await audit_rows(client, "denied:assign")] == [("amal", "forbidden")]
    assert 'action="' + path + '/assign"' not in await (await client.get(path)).text()

    await sign_in(client, "salma")
    csrf = await csrf_of(client, path)
    assert 'action="' + path + '/assign"' in await (await client.get(path)).text()
    done = await client.post(path + "/assign", data={"_csrf": csrf, "assignee": "amal"}, allow_redirects=False)
    assert done.status == 302
    async with client.app[HUB].sessions() as session:
        conversation = await session.get(Conversation, client.conversation_id)
    assert conversation.assignee == "amal" and conversation.status == ConversationStatus.human
    [row] = await audit_rows(client, "assign")
    assert (row.username, row.outcome, row.detail) == ("salma", "ok", {"assignee": "amal", "previous": None})
    assert row.conversation_id == client.conversation_id


@pytest.mark.parametrize("assignee", ["nobody", "mariam", ""])
async def test_assigning_to_someone_who_cannot_work_the_inbox_is_refused(client, assignee):
    path = f"/console/conversations/{client.conversation_id}"
    await sign_in(client, "root")
    response = await client.post(path + "/assign", data={"_csrf": await csrf_of(client, path), "assignee": assignee})
    assert response.status == 400
    async with client.app[HUB].sessions() as session:
        conversation = await session.get(Conversation, client.conversation_id)
    assert conversation.assignee is None and conversation.status == ConversationStatus.pending_human
    [row] = await audit_rows(client, "assign")
    assert row.outcome == "refused:400" and row.username == "root"


async def test_supervisors_transfer_to_a_team_and_the_inbox_filters_by_team(client):
    from crm_store.models import Department

    async with client.app[HUB].sessions() as session:
        session.add(Department(code="cardiology", name_en="Cardiology", name_ar="أمراض القلب", aliases=[]))
        await session.commit()
    path = f"/console/conversations/{client.conversation_id}"
    await sign_in(client, "amal")
    assert (await client.post(path + "/transfer", data={"_csrf": await csrf_of(client, path),
                                                        "team": "cardiology"})).status == 403
    await sign_in(client, "salma")
    csrf = await csrf_of(client, path)
    refused = await client.post(path + "/transfer", data={"_csrf": csrf, "team": "astrology"}, allow_redirects=False)
    assert refused.status == 400
    moved = await client.post(path + "/transfer", data={"_csrf": csrf, "team": "cardiology"}, allow_redirects=False)
    assert moved.status == 302
    async with client.app[HUB].sessions() as session:
        conversation = await session.get(Conversation, client.conversation_id)
    assert (conversation.team, conversation.assignee, conversation.status) == \
        ("cardiology", None, ConversationStatus.pending_human)
    rows = await audit_rows(client, "transfer")
    assert [(r.username, r.outcome, r.detail["team"]) for r in rows if r.outcome == "ok"] == [("salma", "ok", "cardiology")]
    listed = await (await client.get("/console?view=all&department=cardiology")).text()
    assert f'data-id="{client.conversation_id}"' in listed
    other = await (await client.get("/console?view=all&department=dental")).text()
    assert f'data-id="{client.conversation_id}"' not in other


async def test_a_marketer_lands_on_campaigns_and_an_agent_on_the_inbox(client):
    assert (await sign_in(client, "mariam")).headers["Location"] == "/console/campaigns"
    assert (await sign_in(client, "amal")).headers["Location"] == "/console"
