"""Admins edit the training data and work the review queue in the console; nobody else can, and
every change says who made it."""
from __future__ import annotations

import pytest
from sqlalchemy import select

from bot.app import HUB
from crm_store.models import AuditEntry, ConversationStatus, NluChange, NluReview
from nlu_admin.data import NluData
from bot.settings import ROOT
from tests.nlu_admin.conftest import csrf_of, patient_said, sign_in


def data_of(console) -> NluData:
    return NluData(console.workdir / "nlu_data", ROOT / "domain.yml")


async def audit_rows(console, action: str) -> list[AuditEntry]:
    async with console.app[HUB].sessions() as session:
        return (await session.scalars(select(AuditEntry).where(AuditEntry.action == action)
                                      .order_by(AuditEntry.id))).all()


@pytest.mark.parametrize("username", ["amal", "salma", "mariam"])
async def test_only_admins_open_the_nlu_pages(console, username):
    await sign_in(console, username)
    for path in ("/console/nlu", "/console/nlu/review", "/console/nlu/training", "/console/nlu/models"):
        assert (await console.get(path)).status == 403, path
    assert [r.outcome for r in await audit_rows(console, "denied:review_page")] == ["forbidden"]


async def test_the_overview_counts_examples_per_intent_and_language(console):
    await sign_in(console, "root")
    page = await (await console.get("/console/nlu")).text()
    snapshot = data_of(console).load()
    count = len(snapshot.examples("ar", "ask_location"))
    assert f'href="/console/nlu/intents/ask_location?lang=ar" class="">{count}</a>' in page
    assert "No warnings." in page


async def test_an_admin_adds_edits_and_deletes_examples_with_a_change_log(console):
    await sign_in(console, "root")
    path = "/console/nlu/intents/ask_hours?lang=en"
    csrf = await csrf_of(console, path)
    form = {"_csrf": csrf, "lang": "en", "intent": "ask_hours"}
    added = await console.post("/console/nlu/examples/add", data={**form, "example": "are you open on [Eid](time)"},
                               allow_redirects=False)
    assert added.status == 302
    page = await (await console.get(added.headers["Location"])).text()
    assert "Added to the training data." in page and "Eid → time" in page
    edited = await console.post("/console/nlu/examples/edit", data={
        **form, "old": "are you open on [Eid](time)", "example": "where can I park on [Eid](time)",
        "new_intent": "ask_location"}, allow_redirects=False)
    assert edited.status == 302
    snapshot = data_of(console).load()
    assert "where can I park on [Eid](time)" in snapshot.examples("en", "ask_location")
    assert "are you open on [Eid](time)" not in snapshot.examples("en", "ask_hours")
    deleted = await console.post("/console/nlu/examples/delete", data={
        "_csrf": csrf, "lang": "en", "intent": "ask_location", "old": "where can I park on [Eid](time)"},
        allow_redirects=False)
    assert deleted.status == 302
    assert (console.workdir / "nlu_data/nlu/en.yml").read_text() == (ROOT / "nlu_data/nlu/en.yml").read_text()
    async with console.app[HUB].sessions() as session:
        changes = (await session.scalars(select(NluChange).order_by(NluChange.id))).all()
    assert [(c.username, c.action, c.intent, c.new_intent, c.before, c.after) for c in changes] == [
        ("root", "add", "ask_hours", None, None, "are you open on [Eid](time)"),
        ("root", "edit", "ask_hours", "ask_location", "are you open on [Eid](time)", "where can I park on [Eid](time)"),
        ("root", "delete", "ask_location", None, "where can I park on [Eid](time)", None)]
    assert [r.username for r in await audit_rows(console, "nlu_add")] == ["root"]
    log = await (await console.get("/console/nlu/changes")).text()
    assert log.count("where can I park on [Eid](time)") == 2


async def test_a_bad_annotation_is_explained_and_nothing_is_written(console):
    await sign_in(console, "root")
    before = (console.workdir / "nlu_data/nlu/en.yml").read_text()
    csrf = await csrf_of(console, "/console/nlu/intents/greet?lang=en")
    response = await console.post("/console/nlu/examples/add", data={
        "_csrf": csrf, "lang": "en", "intent": "greet", "example": "hi [there](person)"})
    assert response.status == 400 and "unknown entity person" in await response.text()
    assert (console.workdir / "nlu_data/nlu/en.yml").read_text() == before


async def test_a_duplicate_across_intents_is_saved_with_a_warning(console):
    await sign_in(console, "root")
    csrf = await csrf_of(console, "/console/nlu/intents/ask_hours?lang=ar")
    response = await console.post("/console/nlu/examples/add", data={
        "_csrf": csrf, "lang": "ar", "intent": "ask_hours", "example": "وين موقعكم"})
    page = await response.text()
    assert "«وين موقعكم» is an example of ask_hours (ar) and also of ask_location." in page
    overview = await (await console.get("/console/nlu")).text()
    assert "and also of ask_hours" in overview


async def test_the_review_queue_holds_what_the_bot_understood_poorly(console):
    threshold = console.app[HUB].settings.nlu_review_confidence
    fallback, fine, low, payload = await patient_said(
        console, ("ممكن ترسلون لي الموقع على الخريطة", "nlu_fallback", 0.45), ("متى تفتحون", "ask_hours", 0.99),
        ("ابي موعد عند [الجلدية] بكرة", "book_appointment", threshold - 0.1,
         [{"entity": "time", "value": "2026-12-01T00:00:00+03:00", "start": 23, "end": 27}]),
        ("/affirm", "affirm", 1.0))
    hello, asked, after = await patient_said(
        console, ("hello", "greet", 0.99), ("a person please", "request_human", 0.98), ("my bill is wrong", "ask_insurance", 0.9),
        status=ConversationStatus.pending_human, handoff_reason="request_human", language="en")
    reviewed, = await patient_said(console, ("كم سعر الكشف", "out_of_scope", 0.99))
    async with console.app[HUB].sessions() as session:
        session.add(NluReview(message_id=reviewed, outcome="dismissed", username="root"))
        await session.commit()

    await sign_in(console, "root")
    page = await (await console.get("/console/nlu/review")).text()
    shown = [int(x) for x in __import__("re").findall(r'data-message="(\d+)"', page)]
    assert shown == [after, hello, low, fallback]  # newest first
    assert "Not understood (1)" in page and "Low confidence (1)" in page and "Handed to a person (2)" in page
    # The entity the bot found is offered annotated; the brackets the patient typed are not read as one.
    assert 'value="ابي موعد عند (الجلدية) [بكرة](time)"' in page
    only_ar = await (await console.get("/console/nlu/review?lang=ar&reason=fallback")).text()
    assert f'data-message="{fallback}"' in only_ar and f'data-message="{low}"' not in only_ar
    [view] = (await audit_rows(console, "view_nlu_review"))[:1]
    assert view.username == "root" and view.detail["messages"] == shown


async def test_labelling_adds_the_message_to_its_languages_training_file(console):
    fallback, = await patient_said(console, ("ممكن ترسلون لي الموقع على الخريطة", "nlu_fallback", 0.45))
    await sign_in(console, "root")
    csrf = await csrf_of(console, "/console/nlu/review")
    response = await console.post(f"/console/nlu/review/{fallback}/label?lang=ar", data={
        "_csrf": csrf, "intent": "ask_location", "example": "ممكن ترسلون لي الموقع على الخريطة"}, allow_redirects=False)
    assert response.status == 302 and response.headers["Location"] == "/console/nlu/review?lang=ar&done=added"
    assert "ممكن ترسلون لي الموقع على الخريطة" in data_of(console).load().examples("ar", "ask_location")
    page = await (await console.get("/console/nlu/review")).text()
    assert f'data-message="{fallback}"' not in page and "Nothing to review." in page
    async with console.app[HUB].sessions() as session:
        [review] = (await session.scalars(select(NluReview))).all()
        [change] = (await session.scalars(select(NluChange))).all()
    assert (review.outcome, review.intent, review.language, review.username) == ("labelled", "ask_location", "ar", "root")
    assert (change.source, change.action, change.language) == (f"review:{fallback}", "add", "ar")
    [row] = await audit_rows(console, "nlu_label")
    assert row.conversation_id is not None and row.patient_id is not None and row.detail["was"] == "nlu_fallback"
    again = await console.post(f"/console/nlu/review/{fallback}/label", data={
        "_csrf": csrf, "intent": "ask_location", "example": "ممكن ترسلون لي الموقع على الخريطة"})
    assert again.status == 409


async def test_personal_details_never_reach_the_training_files(console):
    message, = await patient_said(console, ("my number is 0551234567 call me", "nlu_fallback", 0.45), language="en")
    await sign_in(console, "root")
    before = (console.workdir / "nlu_data/nlu/en.yml").read_text()
    csrf = await csrf_of(console, "/console/nlu/review")
    response = await console.post(f"/console/nlu/review/{message}/label", data={
        "_csrf": csrf, "intent": "request_human", "example": "my number is 0551234567 call me"})
    assert response.status == 400 and "remove phone numbers" in await response.text()
    assert (console.workdir / "nlu_data/nlu/en.yml").read_text() == before
    fixed = await console.post(f"/console/nlu/review/{message}/label", data={
        "_csrf": csrf, "intent": "request_human", "example": "call me"}, allow_redirects=False)
    assert fixed.status == 302


async def test_setting_a_message_aside_takes_it_out_of_the_queue(console):
    message, = await patient_said(console, ("كم سعر الكشف", "out_of_scope", 0.99))
    await sign_in(console, "root")
    csrf = await csrf_of(console, "/console/nlu/review")
    response = await console.post(f"/console/nlu/review/{message}/dismiss", data={"_csrf": csrf},
                                  allow_redirects=False)
    assert response.status == 302
    assert f'data-message="{message}"' not in await (await console.get("/console/nlu/review")).text()
    assert [r.detail for r in await audit_rows(console, "nlu_dismiss")] == [{"message": message}]
