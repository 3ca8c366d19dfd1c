"""Activating a model loads it into every running Rasa server (PUT /model) and makes it the file a
restart loads; a refusal changes nothing; rolling back brings the previous model back."""
from __future__ import annotations

import pytest
from sqlalchemy import select

from bot.app import HUB
from crm_store.models import AuditEntry, NluActivation
from nlu_admin import registry
from tests.nlu_admin.conftest import FakeRasa, csrf_of, sign_in


async def trained_model(console, name: str = "sila-0001-20261201-100000.tar.gz", content: bytes = b"new model"):
    models = console.workdir / "models"
    path = models / "trained" / name
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(content)
    async with console.app[HUB].sessions() as session:
        model = await registry.register(session, models, path, source="trained", fingerprint="a" * 64,
                                        created_by="root")
        await session.commit()
    return model


async def activations(console) -> list[NluActivation]:
    async with console.app[HUB].sessions() as session:
        return (await session.scalars(select(NluActivation).order_by(NluActivation.id))).all()


async def test_activation_switches_the_running_server_and_survives_a_restart(console):
    model = await trained_model(console)
    models = console.workdir / "models"
    await sign_in(console, "root")
    csrf = await csrf_of(console, "/console/nlu/models")
    response = await console.post(f"/console/nlu/models/{model.id}/activate", data={"_csrf": csrf},
                                  allow_redirects=False)
    assert response.status == 302 and response.headers["Location"] == "/console/nlu/models?done=activated"
    assert console.rasa.loaded == [str((models / model.file).resolve())]
    # What scripts/run.sh loads at the next start, and what `sila train` compares its inputs with.
    assert (models / "sila.tar.gz").read_bytes() == b"new model"
    assert (models / "sila.tar.fingerprint").read_text() == "a" * 64
    [row] = await activations(console)
    found = (models / "trained").glob("found-*.tar.gz")
    [kept] = list(found)  # the model active before the console is kept, to roll back to
    assert kept.read_bytes() == b"the model that was active before the console"
    assert (row.action, row.outcome, row.username, row.model_id) == ("activate", "ok", "root", model.id)
    page = await (await console.get("/console/nlu/models")).text()
    assert f'<strong class="mono current">{model.file}</strong>' in page
    assert f"loaded {(models / model.file).resolve()}" in page  # what the Rasa server reports


async def test_rolling_back_restores_the_previous_model(console):
    model = await trained_model(console)
    models = console.workdir / "models"
    await sign_in(console, "root")
    csrf = await csrf_of(console, "/console/nlu/models")
    await console.post(f"/console/nlu/models/{model.id}/activate", data={"_csrf": csrf})
    page = await (await console.get("/console/nlu/models")).text()
    assert "Roll back to the previous model" in page
    response = await console.post("/console/nlu/models/rollback", data={"_csrf": csrf}, allow_redirects=False)
    assert response.headers["Location"] == "/console/nlu/models?done=rolled_back"
    assert (models / "sila.tar.gz").read_bytes() == b"the model that was active before the console"
    assert (models / "sila.tar.fingerprint").read_text() == "f" * 64
    assert console.rasa.loaded[-1].endswith(".tar.gz") and "/trained/found-" in console.rasa.loaded[-1]
    assert [(a.action, a.outcome) for a in await activations(console)] == [("activate", "ok"), ("rollback", "ok")]
    async with console.app[HUB].sessions() as session:
        audited = (await session.scalars(select(AuditEntry.action).where(AuditEntry.action.like("nlu_%")))).all()
    assert audited == ["nlu_activate", "nlu_rollback"]


async def test_a_server_that_refuses_the_model_changes_nothing(console):
    model = await trained_model(console)
    models = console.workdir / "models"
    console.rasa.refuse = True
    await sign_in(console, "root")
    csrf = await csrf_of(console, "/console/nlu/models")
    response = await console.post(f"/console/nlu/models/{model.id}/activate", data={"_csrf": csrf})
    assert response.status == 502 and "answered 500" in await response.text()
    assert (models / "sila.tar.gz").read_bytes() == b"the model that was active before the console"
    assert [(a.outcome, a.model_id) for a in await activations(console)] == [("failed", model.id)]


async def test_servers_already_switched_are_switched_back_when_another_refuses(console):
    model = await trained_model(console)
    refusing = await FakeRasa(refuse=True).start()
    try:
        settings = console.app[HUB].settings
        settings.rasa_model_urls = f"http://127.0.0.1:{console.rasa.port},http://127.0.0.1:{refusing.port}"
        await sign_in(console, "root")
        csrf = await csrf_of(console, "/console/nlu/models")
        response = await console.post(f"/console/nlu/models/{model.id}/activate", data={"_csrf": csrf})
        assert response.status == 502
        first, back = console.rasa.loaded
        assert first.endswith(model.file) and "/trained/found-" in back
    finally:
        await refusing.close()


async def test_a_missing_model_file_is_reported(console):
    model = await trained_model(console)
    (console.workdir / "models" / model.file).unlink()
    await sign_in(console, "root")
    csrf = await csrf_of(console, "/console/nlu/models")
    response = await console.post(f"/console/nlu/models/{model.id}/activate", data={"_csrf": csrf})
    assert response.status == 502 and "missing" in await response.text()
    assert console.rasa.loaded == []


@pytest.mark.parametrize("keep", [1, 2])
async def test_old_trained_models_are_pruned_but_never_the_active_or_previous_one(console, keep):
    models = console.workdir / "models"
    made = [await trained_model(console, f"sila-{i:04d}.tar.gz", f"model {i}".encode()) for i in range(1, 6)]
    await sign_in(console, "root")
    csrf = await csrf_of(console, "/console/nlu/models")
    await console.post(f"/console/nlu/models/{made[0].id}/activate", data={"_csrf": csrf})
    await console.post(f"/console/nlu/models/{made[1].id}/activate", data={"_csrf": csrf})
    async with console.app[HUB].sessions() as session:
        removed = await registry.prune(session, models, keep)
        await session.commit()
    left = sorted(p.name for p in (models / "trained").glob("*.tar.gz"))
    # Active (2) and previous (1) stay; of the others the newest `keep` by registration: the model
    # found active at the first activation, then sila-0005.
    others = ["sila-0005.tar.gz"] if keep == 2 else []
    assert left == sorted(["sila-0001.tar.gz", "sila-0002.tar.gz", *others,
                           *[p.name for p in (models / "trained").glob("found-*")]])
    assert len(left) == 2 + keep
    assert all(m.file_deleted_at is not None for m in removed)
