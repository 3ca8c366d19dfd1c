"""A patient in the portal, through the real HTTP routes, reading codes from the fake Twilio."""
from __future__ import annotations

import re
from datetime import date

from tests.fakes.twilio_server import FakeTwilio
from tests.portal.conftest import CODE

CSRF = re.compile(r'name="_csrf" value="([^"]+)"')


def csrf_in(html: str) -> str:
    return CSRF.search(html).group(1)


class PortalUser:
    def __init__(self, client, fake: FakeTwilio):
        self.client, self.fake = client, fake

    async def request_code(self, phone: str, lang: str = "en"):
        page = await (await self.client.get(f"/portal/sign-in?lang={lang}")).text()
        return await self.client.post("/portal/sign-in", data={"_csrf": csrf_in(page), "phone": phone, "lang": lang})

    async def code_for(self, address: str, count: int = 1) -> str:
        """The code in the `count`-th message the fake Twilio was asked to send to `address`."""
        sent = await self.fake.wait_for(lambda m: len([r for r in m if r.get("To") == address]) >= count)
        body = [r for r in sent if r.get("To") == address][count - 1]
        found = CODE.search(body.get("Body") or "") or CODE.search(body.get("ContentVariables") or "")
        return found.group(1)

    async def verify(self, phone: str, code: str, born: date | str, lang: str = "en", next_: str = "/portal"):
        csrf = self.client.session.cookie_jar.filter_cookies(self.client.make_url("/portal/"))["sila_portal_pre"].value
        return await self.client.post("/portal/verify", allow_redirects=False, data={
            "_csrf": csrf, "phone": phone, "code": code, "lang": lang, "next": next_,
            "birth_date": born.isoformat() if isinstance(born, date) else born})

    async def sign_in(self, phone: str, born: date, lang: str = "en", address: str | None = None) -> None:
        before = len(self.fake.sent_to(address or phone))
        assert (await self.request_code(phone, lang)).status == 200
        code = await self.code_for(address or phone, before + 1)
        response = await self.verify(phone, code, born, lang)
        assert response.status == 302, await response.text()

    async def csrf(self, path: str = "/portal") -> str:
        return csrf_in(await (await self.client.get(path)).text())

    async def post(self, path: str, data: dict | None = None, **kwargs):
        return await self.client.post(path, data={"_csrf": await self.csrf(), **(data or {})},
                                      allow_redirects=False, **kwargs)

    def sign_out_locally(self) -> None:
        self.client.session.cookie_jar.clear()
