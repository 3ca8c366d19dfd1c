"""Console pages for admins who train the bot: training data, review queue, training and
evaluation, models. Admins only: the review queue shows patients' own words."""
from __future__ import annotations

import asyncio
from pathlib import Path
from urllib.parse import urlencode

import aiohttp_jinja2
from aiohttp import web
from sqlalchemy import select

from bot.settings import ROOT
from crm_store.models import NluActivation, NluChange, NluModel, NluReview, NluTrainingJob, StaffRole, utcnow
from inbox.security import CSRF, STAFF, audit, requires
from inbox.views import STRINGS as CONSOLE_STRINGS
from nlu_admin import activation, registry, review
from nlu_admin.data import LANGUAGES, Change, Conflict, NluData, warnings
from nlu_admin.evaluation import compare
from nlu_admin.training import Busy, Trainer, latest_jobs
from nlu_admin.ui import strings
from nlu_admin.yamlfile import AnnotationError, parse_example

ADMIN = StaffRole.admin


class _TrainerBox:
    """The app's trainer, made on first use (it needs the hub's open database)."""

    trainer: Trainer | None = None


TRAINER = web.AppKey("nlu_trainer", _TrainerBox)


def _hub(request: web.Request):
    from bot.app import HUB

    return request.app[HUB]


def _trainer(request: web.Request) -> Trainer:
    box = request.app[TRAINER]
    if box.trainer is None:
        hub = _hub(request)
        box.trainer = Trainer(hub.sessions, hub.settings)
    return box.trainer


def _data(request: web.Request) -> NluData:
    return NluData(Path(_hub(request).settings.nlu_data_dir), ROOT / "domain.yml")


def _ctx(request: web.Request, **values) -> dict:
    user = request[STAFF]
    lang = "ar" if user.language == "ar" else "en"
    return {"t": CONSOLE_STRINGS[lang], "n": strings(lang), "lang": lang, "user": user, "csrf": request.get(CSRF),
            "notice": values.pop("notice", None) or strings(lang).get(request.query.get("done", ""), None),
            "error": values.pop("error", None), **values}


def _language(value: str | None) -> str:
    if value not in LANGUAGES:
        raise web.HTTPBadRequest(text="language must be ar or en")
    return value


async def _record(request: web.Request, change: Change) -> None:
    """Who changed what: a change-log row (shown on the NLU pages) and an audit entry."""
    user = request[STAFF]
    async with _hub(request).sessions() as session:
        session.add(NluChange(user_id=user.id, username=user.username, action=change.action,
                              language=change.language, intent=change.intent, new_intent=change.new_intent,
                              before=change.before, after=change.after, source="console"))
        audit(session, request, user, f"nlu_{change.action}",
              detail={"language": change.language, "intent": change.new_intent or change.intent})
        await session.commit()


# --- training data -----------------------------------------------------------------------------


@requires(ADMIN)
async def overview(request: web.Request) -> web.Response:
    hub = _hub(request)
    snapshot = await asyncio.to_thread(_data(request).load)
    found = warnings(snapshot, hub.settings.nlu_min_examples)
    async with hub.sessions() as session:
        changes = (await session.scalars(select(NluChange).order_by(NluChange.id.desc()).limit(15))).all()
        queued = (await review.counts(session, hub.settings.nlu_review_confidence))["all"]
        jobs = await latest_jobs(session, 1)
        current = await registry.active(session, Path(hub.settings.models_dir))
        await session.commit()
    table = [{"intent": intent, **{lang: len(snapshot.examples(lang, intent)) for lang in LANGUAGES}}
             for intent in snapshot.intents]
    return aiohttp_jinja2.render_template("nlu_overview.html", request, _ctx(
        request, table=table, warnings=found, changes=changes, queued=queued, job=jobs[0] if jobs else None,
        current=current, minimum=hub.settings.nlu_min_examples, languages=LANGUAGES))


async def _intent_page(request: web.Request, intent: str, language: str, status: int = 200, **extra) -> web.Response:
    snapshot = await asyncio.to_thread(_data(request).load)
    if intent not in snapshot.intents:
        raise web.HTTPNotFound(text="no such intent")
    file = snapshot.training.get(language)
    block = file.intents().get(intent) if file else None
    examples = []
    for raw in snapshot.examples(language, intent):
        try:
            plain, annotations = parse_example(raw)
            entities = [a.as_dict(plain) for a in annotations]
        except AnnotationError:
            entities = []
        examples.append({"raw": raw, "entities": entities})
    own = [w for w in warnings(snapshot, _hub(request).settings.nlu_min_examples)
           if w.intent == intent and language in w.language.split(",")]
    return aiohttp_jinja2.render_template("nlu_intent.html", request, _ctx(
        request, intent=intent, language=language, examples=examples, intents=snapshot.intents,
        editable=block is None or block.editable, warnings=own, entity_names=sorted(snapshot.entities),
        languages=LANGUAGES, minimum=_hub(request).settings.nlu_min_examples, **extra), status=status)


@requires(ADMIN)
async def intent_page(request: web.Request) -> web.Response:
    return await _intent_page(request, request.match_info["intent"], _language(request.query.get("lang", "ar")))


async def _apply(request: web.Request, action: str) -> web.StreamResponse:
    form = await request.post()
    language, intent = _language(form.get("lang")), str(form.get("intent", ""))
    data = _data(request)
    try:
        if action == "add":
            change = await asyncio.to_thread(data.add, language, intent, str(form.get("example", "")))
        elif action == "edit":
            change = await asyncio.to_thread(data.edit, language, intent, str(form.get("old", "")),
                                             str(form.get("example", "")), str(form.get("new_intent") or intent))
        else:
            change = await asyncio.to_thread(data.delete, language, intent, str(form.get("old", "")))
    except (AnnotationError, Conflict) as exc:
        return await _intent_page(request, intent, language, status=409 if isinstance(exc, Conflict) else 400,
                                  error=str(exc))
    await _record(request, change)
    done = {"add": "added", "edit": "saved", "delete": "deleted"}[action]
    raise web.HTTPFound(f"/console/nlu/intents/{intent}?lang={language}&done={done}")


@requires(ADMIN)
async def add_example(request: web.Request) -> web.StreamResponse:
    return await _apply(request, "add")


@requires(ADMIN)
async def edit_example(request: web.Request) -> web.StreamResponse:
    return await _apply(request, "edit")


@requires(ADMIN)
async def delete_example(request: web.Request) -> web.StreamResponse:
    return await _apply(request, "delete")


@requires(ADMIN)
async def change_log(request: web.Request) -> web.Response:
    async with _hub(request).sessions() as session:
        changes = (await session.scalars(select(NluChange).order_by(NluChange.id.desc()).limit(300))).all()
    return aiohttp_jinja2.render_template("nlu_changes.html", request, _ctx(request, changes=changes))


# --- review queue ------------------------------------------------------------------------------


async def _review_page(request: web.Request, status: int = 200, **extra) -> web.Response:
    hub = _hub(request)
    threshold = hub.settings.nlu_review_confidence
    reason = request.query.get("reason") if request.query.get("reason") in review.REASONS else None
    language = request.query.get("lang") if request.query.get("lang") in LANGUAGES else None
    async with hub.sessions() as session:
        items = await review.queue(session, threshold, reason=reason, language=language)
        counts = await review.counts(session, threshold, language)
        # Admins read patients' own words here: the read is audited like a conversation view.
        audit(session, request, request[STAFF], "view_nlu_review",
              detail={"reason": reason, "language": language, "messages": [i.message_id for i in items]})
        await session.commit()
    intents, _ = await asyncio.to_thread(_data(request).domain)
    return aiohttp_jinja2.render_template("nlu_review.html", request, _ctx(
        request, items=items, counts=counts, reason=reason or "", language=language or "", intents=intents,
        reasons=review.REASONS, threshold=threshold, **extra), status=status)


@requires(ADMIN)
async def review_page(request: web.Request) -> web.Response:
    return await _review_page(request)


def _back_to_queue(request: web.Request, done: str) -> str:
    keep = {k: v for k, v in request.query.items() if k in ("reason", "lang")}
    return "/console/nlu/review?" + urlencode({**keep, "done": done})


@requires(ADMIN)
async def label(request: web.Request) -> web.StreamResponse:
    """One click: the message, as the admin corrected it, becomes an example of the chosen intent."""
    hub = _hub(request)
    message_id = int(request.match_info["id"])
    form = await request.post()
    intent, raw = str(form.get("intent", "")), str(form.get("example", ""))
    async with hub.sessions() as session:
        found = await review.pending(session, message_id)
    if found is None:
        return await _review_page(request, status=409, error="already reviewed")
    message, conversation = found
    language = message.language if message.language in LANGUAGES else conversation.language
    try:
        review.check_personal_data(raw)
        change = await asyncio.to_thread(_data(request).add, language, intent, raw)
    except (AnnotationError, review.PersonalData) as exc:
        return await _review_page(request, status=400, error=str(exc))
    except Conflict:
        change = None  # already an example of that intent: the message is reviewed all the same
    user = request[STAFF]
    async with hub.sessions() as session:
        session.add(NluReview(message_id=message_id, outcome="labelled", intent=intent, example=raw,
                              language=language, username=user.username))
        if change is not None:
            session.add(NluChange(user_id=user.id, username=user.username, action="add", language=language,
                                  intent=intent, after=change.after, source=f"review:{message_id}"))
        audit(session, request, user, "nlu_label", patient_id=conversation.patient_id,
              conversation_id=conversation.id, detail={"message": message_id, "intent": intent,
                                                       "language": language, "was": message.intent})
        await session.commit()
    raise web.HTTPFound(_back_to_queue(request, "added"))


@requires(ADMIN)
async def dismiss(request: web.Request) -> web.StreamResponse:
    hub = _hub(request)
    message_id = int(request.match_info["id"])
    async with hub.sessions() as session:
        found = await review.pending(session, message_id)
        if found is not None:
            message, conversation = found
            session.add(NluReview(message_id=message_id, outcome="dismissed", username=request[STAFF].username))
            audit(session, request, request[STAFF], "nlu_dismiss", patient_id=conversation.patient_id,
                  conversation_id=conversation.id, detail={"message": message_id})
            await session.commit()
    raise web.HTTPFound(_back_to_queue(request, "set_aside"))


# --- training, evaluation, models --------------------------------------------------------------


def _job_state(job: NluTrainingJob, n: dict) -> dict:
    end = job.finished_at or utcnow()
    return {"id": job.id, "status": job.status, "status_label": n.get(f"status_{job.status}", job.status),
            "stage": job.stage, "stage_label": n.get(f"stage_{job.stage}", job.stage),
            "progress": round(job.progress or 0.0, 4), "detail": job.detail or "",
            "elapsed": int((end - job.started_at).total_seconds()), "running": job.status == "running"}


@requires(ADMIN)
async def training_page(request: web.Request) -> web.Response:
    hub = _hub(request)
    async with hub.sessions() as session:
        jobs = await latest_jobs(session)
        current = await registry.active(session, Path(hub.settings.models_dir))
        await session.commit()
    n = strings(request[STAFF].language)
    return aiohttp_jinja2.render_template("nlu_training.html", request, _ctx(
        request, jobs=[(job, _job_state(job, n)) for job in jobs], current=current,
        running=any(job.status == "running" for job in jobs)))


@requires(ADMIN)
async def start_training(request: web.Request) -> web.StreamResponse:
    try:
        job_id = await _trainer(request).start(request[STAFF].username)
    except Busy:
        raise web.HTTPConflict(text="a training is already running")
    async with _hub(request).sessions() as session:
        audit(session, request, request[STAFF], "nlu_train", detail={"job": job_id})
        await session.commit()
    raise web.HTTPFound(f"/console/nlu/training/{job_id}")


async def _job_page(request: web.Request, job_id: int, status: int = 200, **extra) -> web.Response:
    hub = _hub(request)
    async with hub.sessions() as session:
        await latest_jobs(session, 1)  # marks a job whose worker died
        job = await session.get(NluTrainingJob, job_id)
        if job is None:
            raise web.HTTPNotFound(text="no such training")
        model = await session.get(NluModel, job.model_id) if job.model_id else None
        compared = await session.get(NluModel, job.compared_model_id) if job.compared_model_id else None
        current = await registry.active(session, Path(hub.settings.models_dir))
        await session.commit()
    n = strings(request[STAFF].language)
    data_dir = Path(hub.settings.nlu_data_dir)
    return aiohttp_jinja2.render_template("nlu_job.html", request, _ctx(
        request, job=job, state=_job_state(job, n), model=model, compared=compared, current=current,
        views=compare(job.evaluation, (n["expected"], n["predicted"])), held_out={lang: data_dir / "test" / f"{lang}.yml" for lang in LANGUAGES},
        models_dir=Path(hub.settings.models_dir), **extra), status=status)


@requires(ADMIN)
async def job_page(request: web.Request) -> web.Response:
    return await _job_page(request, int(request.match_info["id"]))


@requires(ADMIN)
async def job_status(request: web.Request) -> web.Response:
    async with _hub(request).sessions() as session:
        await latest_jobs(session, 1)
        job = await session.get(NluTrainingJob, int(request.match_info["id"]))
        await session.commit()
    if job is None:
        raise web.HTTPNotFound(text="no such training")
    return web.json_response(_job_state(job, strings(request[STAFF].language)))


async def _models_page(request: web.Request, status: int = 200, **extra) -> web.Response:
    hub = _hub(request)
    async with hub.sessions() as session:
        current = await registry.active(session, Path(hub.settings.models_dir))
        before = await registry.previous(session, current)
        models = (await session.scalars(select(NluModel).where(NluModel.file_deleted_at.is_(None))
                                        .order_by(NluModel.id.desc()))).all()
        history = (await session.scalars(select(NluActivation).order_by(NluActivation.id.desc()).limit(30))).all()
        await session.commit()
    servers = await activation.RasaTarget.from_settings(hub.settings).status(hub.http)
    return aiohttp_jinja2.render_template("nlu_models.html", request, _ctx(
        request, current=current, before=before, models=models, history=history, servers=servers,
        by_id={m.id: m for m in models}, **extra), status=status)


@requires(ADMIN)
async def models_page(request: web.Request) -> web.Response:
    return await _models_page(request)


async def _switch(request: web.Request, job_id: int | None, work) -> web.StreamResponse:
    hub = _hub(request)
    try:
        row = await work(hub)
    except activation.ActivationError as exc:
        async with hub.sessions() as session:
            audit(session, request, request[STAFF], "nlu_activate", outcome="failed", detail={"error": str(exc)[:300]})
            await session.commit()
        if job_id is not None:
            return await _job_page(request, job_id, status=502, error=str(exc))
        return await _models_page(request, status=502, error=str(exc))
    async with hub.sessions() as session:
        audit(session, request, request[STAFF], f"nlu_{row.action}", detail={"model": row.model_id,
                                                                              "previous": row.previous_model_id})
        await session.commit()
    done = "activated" if row.action == "activate" else "rolled_back"
    raise web.HTTPFound(f"/console/nlu/training/{job_id}?done={done}" if job_id else f"/console/nlu/models?done={done}")


@requires(ADMIN)
async def activate_model(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    job_id = int(form["job"]) if str(form.get("job", "")).isdigit() else None
    model_id = int(request.match_info["id"])
    return await _switch(request, job_id, lambda hub: activation.activate(
        hub.sessions, hub.http, hub.settings, model_id, request[STAFF].username))


@requires(ADMIN)
async def rollback_model(request: web.Request) -> web.StreamResponse:
    return await _switch(request, None, lambda hub: activation.rollback(
        hub.sessions, hub.http, hub.settings, request[STAFF].username))


async def _stop_training(app: web.Application) -> None:
    trainer = app[TRAINER].trainer
    if trainer is not None:
        await trainer.close()


def setup_nlu_admin(app: web.Application) -> None:
    app[TRAINER] = _TrainerBox()
    app.on_shutdown.append(_stop_training)
    app.router.add_routes([
        web.get("/console/nlu", overview),
        web.get("/console/nlu/intents/{intent}", intent_page),
        web.post("/console/nlu/examples/add", add_example),
        web.post("/console/nlu/examples/edit", edit_example),
        web.post("/console/nlu/examples/delete", delete_example),
        web.get("/console/nlu/changes", change_log),
        web.get("/console/nlu/review", review_page),
        web.post(r"/console/nlu/review/{id:\d+}/label", label),
        web.post(r"/console/nlu/review/{id:\d+}/dismiss", dismiss),
        web.get("/console/nlu/training", training_page),
        web.post("/console/nlu/training", start_training),
        web.get(r"/console/nlu/training/{id:\d+}", job_page),
        web.get(r"/console/nlu/training/{id:\d+}/status", job_status),
        web.get("/console/nlu/models", models_page),
        web.post(r"/console/nlu/models/{id:\d+}/activate", activate_model),
        web.post("/console/nlu/models/rollback", rollback_model),
    ])
