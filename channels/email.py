"""E-mail: replies go out over SMTP (STARTTLS), the patient's answers come back through the
inbound-parse webhook of whichever provider receives mail for SILA_EMAIL_REPLY_DOMAIN (SendGrid
Inbound Parse, Mailgun routes).

Every mail Sila sends has a Reply-To of reply+<conversation>.<mac>@<reply domain>: the MAC, keyed by
the inbound secret, makes the address unguessable, and it (or an In-Reply-To naming a Message-ID
Sila sent) threads the answer into the conversation it answers.
"""
from __future__ import annotations

import asyncio
import hashlib
import hmac
import html
import json
import logging
import re
import secrets
import ssl
from dataclasses import dataclass, replace
from email.headerregistry import Address
from email.message import EmailMessage
from email.parser import HeaderParser
from email.policy import default as default_policy
from email.utils import formatdate, getaddresses, parseaddr
from html.parser import HTMLParser
from urllib.parse import quote

import aiosmtplib
from aiohttp import web
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from bot import consent
from bot.formatting import arabic_digits
from bot.texts import text as say
from channels.base import ChannelAdapter, ChannelError, InboundMessage, OutboundMessage, ProviderReceipt
from crm_store.content import load_hospital
from crm_store.models import (
    ChannelIdentity,
    Consent,
    ConsentPurpose,
    ConsentStatus,
    Conversation,
    JourneyEvent,
    Message,
    Patient,
)

log = logging.getLogger(__name__)

INBOUND_PATH = "/webhooks/email"
UNSUBSCRIBE_PATH = "/webhooks/email/unsubscribe"
SECRET_HEADER = "X-Sila-Email-Secret"
MAX_TEXT = 4000
MAX_POST = 30 * 1024 * 1024  # SendGrid posts a whole message, attachments included, up to 30 MB
SEND_TIMEOUT = 30.0
ADDRESS = re.compile(r"[^@\s<>]+@[^@\s<>]+\.[^@\s<>]+")
MESSAGE_ID = re.compile(r"<[^<>\s]+>")
# Invisible direction marks Gmail wraps around Arabic quote headers.
BIDI = re.compile("[\u200e\u200f\u202a-\u202e\u2066-\u2069]")

def frame(key: str, language: str, **values) -> str:
    return say(key, language, **values)


# --- tokens ---------------------------------------------------------------------------------------

def sign(secret: str, purpose: str, value: int) -> str:
    """`<value>.<mac>`: hex, because some mail systems fold the case of an address's local part."""
    mac = hmac.new(secret.encode(), f"{purpose}:{value}".encode(), hashlib.sha256).hexdigest()[:20]
    return f"{value}.{mac}"


def verify(secret: str, purpose: str, token: str) -> int | None:
    match = re.fullmatch(r"(\d{1,12})\.[0-9a-f]{20}", token.strip().lower())
    if match and hmac.compare_digest(sign(secret, purpose, int(match[1])), token.strip().lower()):
        return int(match[1])
    return None


# --- the patient's new words, without the quoted history ----------------------------------------

def _history_starts(line: str, following: list[str]) -> bool:
    s = BIDI.sub("", line).strip()
    joined = " ".join([s] + [BIDI.sub("", f).strip() for f in following[:1]])
    if line.rstrip("\r") == "-- " or re.match(r"(Sent from my|Get Outlook for)\b", s) or re.match(
            r"(أُرسلت|أرسلت|مرسل|مُرسل|تم الإرسال) من", s):
        return True  # a signature or a phone's footer
    if re.match(r"On\b", s) and (s.endswith("wrote:") or joined.endswith("wrote:")):
        return True  # Gmail, Apple Mail, Thunderbird (Gmail wraps long ones onto two lines)
    if re.search(r"كتب|تمت كتابة|بواسطة", joined) and (s.endswith(":") or joined.endswith(":")) and len(joined) < 300:
        return True  # «في … كتب:» (Gmail, Outlook in Arabic)
    if re.fullmatch(r"-{2,}\s*(Original Message|Forwarded message|الرسالة الأصلية)\s*-{2,}", s, re.I):
        return True
    if re.match(r"(From|من)\s*:", s):  # Outlook's block: From:, Sent:/Date:, To:, Subject:
        return any(re.match(r"(Sent|Date|To|Subject|أرسل|تاريخ|التاريخ|إلى|الموضوع)\s*:", BIDI.sub("", f).strip())
                   for f in following[:3])
    return bool(re.fullmatch(r"_{10,}", s)) and any(re.match(r"(From|من)\s*:", f.strip()) for f in following[:2])


def strip_quoted(body: str) -> str:
    """What the patient wrote above (or between) the quoted mail: no "> " lines, no "On … wrote:"."""
    lines = body.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    kept: list[str] = []
    for i, line in enumerate(lines):
        if _history_starts(line, lines[i + 1:i + 4]):
            break
        if not BIDI.sub("", line).lstrip().startswith(">"):
            kept.append(line.rstrip())
    return re.sub(r"\n{3,}", "\n\n", "\n".join(kept)).strip()


class _HtmlText(HTMLParser):
    """The visible text of an HTML-only mail, without quoted blocks (Gmail/Apple <blockquote>)."""

    BREAKS = {"br", "p", "div", "li", "tr", "h1", "h2", "h3"}
    VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.skip = 0

    def handle_starttag(self, tag, attrs):
        classes = dict(attrs).get("class") or ""
        if tag in ("blockquote", "style", "script", "head") or "gmail_quote" in classes or self.skip:
            self.skip += tag not in self.VOID
        elif tag in self.BREAKS:
            self.parts.append("\n")

    def handle_endtag(self, tag):
        if self.skip and tag not in self.VOID:
            self.skip -= 1
        elif tag in self.BREAKS:
            self.parts.append("\n")

    def handle_data(self, data):
        if not self.skip:
            self.parts.append(data)


def html_to_text(markup: str) -> str:
    parser = _HtmlText()
    parser.feed(markup)
    parser.close()
    return "".join(parser.parts)


# --- inbound parse ---------------------------------------------------------------------------------

class Malformed(ValueError):
    """The webhook's body is not an inbound e-mail."""


@dataclass
class InboundMail:
    sender: str
    recipients: list[str]
    text: str
    message_id: str
    references: list[str]
    subject: str
    automatic: bool


def _address(value: str) -> str | None:
    address = parseaddr(value or "")[1].strip().lower()
    return address if ADDRESS.fullmatch(address) else None


def parse_inbound(form) -> InboundMail:
    """SendGrid's (text, html, headers, envelope) and Mailgun's (body-plain, stripped-text,
    message-headers, Message-Id) inbound-parse fields, as one mail."""
    fields = {k.lower(): v for k, v in form.items() if isinstance(v, str)}
    headers = HeaderParser(policy=default_policy).parsestr(fields.get("headers", ""), headersonly=True)
    try:
        for name, value in json.loads(fields.get("message-headers") or "[]"):
            headers[name] = value
        envelope = json.loads(fields.get("envelope") or "{}")
    except (TypeError, ValueError) as exc:
        raise Malformed(f"envelope or message-headers is not JSON: {exc}") from None

    def header(name: str) -> str:
        value = fields.get(name.lower()) or headers.get(name) or ""
        return str(value).strip()

    sender = _address(fields.get("from") or header("From") or fields.get("sender", ""))
    if sender is None:
        raise Malformed("no sender address in 'from'")
    bodies = [fields.get(k) for k in ("stripped-text", "text", "body-plain") if fields.get(k) is not None]
    markup = next((fields[k] for k in ("stripped-html", "html", "body-html") if fields.get(k) is not None), None)
    if not bodies and markup is None:
        raise Malformed("no body: expected 'text' (SendGrid), 'body-plain' (Mailgun) or 'html'")
    body = bodies[0] if bodies else html_to_text(markup)
    to = envelope.get("to") if isinstance(envelope, dict) else None
    listed = [*(to if isinstance(to, list) else [to or ""]), fields.get("recipient", ""), fields.get("to", ""),
              fields.get("cc", ""), header("To"), header("Cc"), header("Delivered-To"), header("X-Original-To")]
    recipients = [a.lower() for _, a in getaddresses([v for v in listed if v]) if ADDRESS.fullmatch(a)]
    subject = header("Subject")
    message_id = _message_id(header("Message-ID") or header("Message-Id"), sender, recipients, subject,
                             header("Date"), body)
    references = MESSAGE_ID.findall(f"{header('In-Reply-To')} {header('References')}")
    auto = header("Auto-Submitted").lower()
    automatic = bool(
        (auto and auto != "no") or header("X-Autoreply") or header("X-Autorespond")
        or header("Precedence").lower() in ("bulk", "junk", "auto_reply")
        or sender.split("@")[0] in ("mailer-daemon", "postmaster"))
    return InboundMail(sender, recipients, strip_quoted(body)[:MAX_TEXT], message_id, references, subject, automatic)


def _message_id(value: str, *parts: object) -> str:
    """The mail's Message-ID (a retried webhook carries the same one), or a digest when it has none."""
    found = MESSAGE_ID.search(value)
    if found and len(found[0]) <= 100:
        return found[0]
    digest = hashlib.sha256((value or json.dumps(parts, default=str)).encode()).hexdigest()
    return f"sha256:{digest}"


# --- outbound ----------------------------------------------------------------------------------------

@dataclass
class _Context:
    purpose: str = "transactional"
    automatic: bool = True
    patient_id: int | None = None
    conversation_id: int | None = None
    in_reply_to: str | None = None
    references: tuple[str, ...] = ()


def _smtp_error(code: int, message: str) -> ChannelError:
    # 4xx is "try again later" (greylisting, a full queue); 5xx, e.g. 550 5.1.1 user unknown, is final.
    return ChannelError(f"SMTP {code} {message}".strip(), retryable=400 <= code < 500, code=str(code))


class EmailAdapter(ChannelAdapter):
    name = "email"
    # Options are rendered here: numbered lines in the text part, mailto links in the HTML part.
    renders_buttons = True
    # A one-word reply "Cancel" or "Yes" is an answer in an e-mail thread; opting out of e-mail is
    # the List-Unsubscribe link (RFC 8058), which mail clients show beside the sender.
    honours_keywords = False

    def __init__(self, hub, *, host: str, port: int, username: str, password: str, starttls: bool,
                 sender: str, reply_domain: str, secret: str, public_url: str, hospital: dict,
                 tls_context: ssl.SSLContext):
        self.hub = hub
        self.host, self.port, self.username, self.password = host, port, username, password
        self.starttls = starttls
        self.sender = sender
        self.reply_domain = reply_domain.lower()
        self.secret = secret
        self.public_url = public_url.rstrip("/")
        self.hospital = hospital
        self.tls_context = tls_context
        self._locks = [asyncio.Lock() for _ in range(64)]

    @classmethod
    def from_settings(cls, settings, hub) -> "EmailAdapter":
        for value, env in ((settings.smtp_host, "SILA_SMTP_HOST"), (settings.email_from, "SILA_EMAIL_FROM"),
                           (settings.email_reply_domain, "SILA_EMAIL_REPLY_DOMAIN"),
                           (settings.email_inbound_secret, "SILA_EMAIL_INBOUND_SECRET")):
            if not value:
                raise ValueError(f"the email channel needs {env}")
        if _address(settings.email_from) is None:
            raise ValueError("SILA_EMAIL_FROM is not an e-mail address")
        # A private CA (a hospital's own relay, or a test server) is trusted through this file.
        ca_file = getattr(settings, "smtp_ca_file", "") or None
        return cls(hub, host=settings.smtp_host, port=settings.smtp_port, username=settings.smtp_username,
                   password=settings.smtp_password, starttls=settings.smtp_starttls, sender=settings.email_from,
                   reply_domain=settings.email_reply_domain, secret=settings.email_inbound_secret,
                   public_url=settings.base_url, hospital=load_hospital(settings.hospital_file)["hospital"],
                   tls_context=ssl.create_default_context(cafile=ca_file))

    def routes(self) -> list[web.RouteDef]:
        return [web.post(INBOUND_PATH, self.inbound),
                web.get(UNSUBSCRIBE_PATH, self.unsubscribe_page),
                web.post(UNSUBSCRIBE_PATH, self.unsubscribe)]

    def reply_address(self, conversation_id: int) -> str:
        return f"reply+{sign(self.secret, 'reply', conversation_id)}@{self.reply_domain}"

    def unsubscribe_token(self, patient_id: int) -> str:
        return sign(self.secret, "unsubscribe", patient_id)

    def unsubscribe_url(self, patient_id: int) -> str:
        return f"{self.public_url}{UNSUBSCRIBE_PATH}?token={self.unsubscribe_token(patient_id)}"

    # --- sending ---

    def combine(self, messages: list[OutboundMessage]) -> OutboundMessage:
        """The replies of one turn as one mail (the outbox batches them): a paragraph each, in
        order, and the options of the last, so a patient is not sent three mails for one answer."""
        text = "\n\n".join(m.text.strip() for m in messages if m.text.strip())
        return replace(messages[0], text=text, buttons=messages[-1].buttons)

    async def deliver(self, message: OutboundMessage) -> ProviderReceipt:
        recipient = _address(message.recipient)
        if recipient is None:
            raise ChannelError("the patient's address is not an e-mail address", retryable=False, code="address")
        mail = self.compose(message, recipient, await self._context(message))
        try:
            await aiosmtplib.send(
                mail, hostname=self.host, port=self.port, username=self.username or None,
                password=self.password or None, use_tls=self.port == 465, start_tls=self.starttls and self.port != 465,
                tls_context=self.tls_context, timeout=SEND_TIMEOUT)
        except aiosmtplib.SMTPRecipientsRefused as exc:
            refused = exc.recipients[0]
            raise _smtp_error(refused.code, refused.message) from None
        except aiosmtplib.SMTPAuthenticationError as exc:
            # The hospital's credentials, not the patient's message: worth retrying once fixed.
            raise ChannelError(f"SMTP login refused ({exc.code}); check SILA_SMTP_USERNAME/PASSWORD",
                               retryable=True, code=str(exc.code)) from None
        except aiosmtplib.SMTPResponseException as exc:
            raise _smtp_error(exc.code, exc.message) from None
        except (aiosmtplib.SMTPException, OSError) as exc:
            raise ChannelError(f"SMTP server unreachable: {exc}", retryable=True, code="connection") from None
        return ProviderReceipt("sent", mail["Message-ID"])

    async def _context(self, message: OutboundMessage) -> _Context:
        """What the stored message and its conversation say about this mail: purpose, thread."""
        async with self.hub.sessions() as session:
            row = await session.get(Message, message.message_id)
            conversation_id = message.conversation_id or (row.conversation_id if row else None)
            conversation = await session.get(Conversation, conversation_id) if conversation_id else None
            if conversation is None:
                return _Context()
            earlier = (await session.execute(
                select(Message.direction, Message.provider_message_id)
                .where(Message.conversation_id == conversation.id, Message.channel == self.name,
                       Message.provider_message_id.like("<%"), Message.id != message.message_id)
                .order_by(Message.id.desc()).limit(10))).all()
        inbound = [m.provider_message_id for m in earlier if m.direction == "in"]
        return _Context(
            purpose=row.purpose if row else "transactional",
            automatic=row is None or row.sender in ("bot", "system"),
            patient_id=conversation.patient_id, conversation_id=conversation.id,
            in_reply_to=inbound[0] if inbound else None,
            references=tuple(reversed([m.provider_message_id for m in earlier])))

    def compose(self, message: OutboundMessage, recipient: str, context: _Context) -> EmailMessage:
        lang = "ar" if message.language == "ar" else "en"
        hospital = self.hospital.get(f"name_{lang}") or self.hospital.get("name_en", "")
        marketing = context.purpose == ConsentPurpose.marketing.value and context.patient_id is not None
        subject = frame("email_marketing_subject" if marketing else "email_subject", lang, hospital=hospital)
        reply_to = self.reply_address(context.conversation_id) if context.conversation_id else None

        mail = EmailMessage()
        name, address = parseaddr(self.sender)
        mail["From"] = Address(name or hospital, addr_spec=address)
        mail["To"] = recipient
        if reply_to:
            mail["Reply-To"] = Address(name or hospital, addr_spec=reply_to)
        mail["Subject"] = subject
        mail["Date"] = formatdate(usegmt=True)
        mail["Message-ID"] = f"<sila.{message.message_id}.{secrets.token_hex(8)}@{self.reply_domain}>"
        if context.in_reply_to:
            mail["In-Reply-To"] = context.in_reply_to
        if context.references:
            mail["References"] = " ".join(context.references)
        if context.automatic:
            # RFC 3834: out-of-office responders must not answer an automatic mail (no reply loops).
            mail["Auto-Submitted"] = "auto-generated" if marketing else "auto-replied"
            mail["X-Auto-Response-Suppress"] = "OOF, AutoReply"
        unsubscribe = None
        if marketing:
            unsubscribe = self.unsubscribe_url(context.patient_id)
            mailto = f"unsubscribe+{self.unsubscribe_token(context.patient_id)}@{self.reply_domain}"
            mail["List-Unsubscribe"] = f"<mailto:{mailto}?subject=unsubscribe>, <{unsubscribe}>"
            # RFC 8058: the mail client may unsubscribe with one POST, without opening a page.
            mail["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
        options = [(arabic_digits(str(i)) if lang == "ar" else str(i), b["title"])
                   for i, b in enumerate(message.buttons, 1)]
        mail.set_content(self._text_part(message.text, options, lang, hospital, unsubscribe))
        mail.add_alternative(self._html_part(message.text, options, lang, hospital, subject, reply_to, unsubscribe),
                             subtype="html")
        mail["Content-Language"] = lang  # after the parts: set_content() clears Content-* headers
        return mail

    def _text_part(self, body: str, options: list[tuple[str, str]], lang: str, hospital: str,
                   unsubscribe: str | None) -> str:
        lines = [body]
        if options:
            lines += [""] + [f"{n}. {title}" for n, title in options] + ["", frame("email_choose", lang)]
        lines += ["", "-- ", f"{hospital} · {self.hospital.get('phone', '')}"]
        if unsubscribe:
            lines.append(f"{frame('email_unsubscribe', lang)}: {unsubscribe}")
        return "\n".join(lines) + "\n"

    def _html_part(self, body: str, options: list[tuple[str, str]], lang: str, hospital: str, subject: str,
                   reply_to: str | None, unsubscribe: str | None) -> str:
        direction = "rtl" if lang == "ar" else "ltr"
        align = "right" if lang == "ar" else "left"
        paragraphs = "".join(f"<p>{html.escape(p).replace(chr(10), '<br>')}</p>"
                             for p in re.split(r"\n{2,}", body.strip()) if p.strip())
        choices = ""
        if options:
            links = []
            for number, title in options:
                label = f"{html.escape(number)}. {html.escape(title)}"
                if reply_to:  # a tap opens a reply that already says the number
                    href = f"mailto:{reply_to}?subject={quote('Re: ' + subject)}&body={quote(number)}"
                    label = f'<a href="{html.escape(href)}" style="color:#0b6e4f;text-decoration:none">{label}</a>'
                links.append(f'<li style="margin:6px 0;list-style:none">{label}</li>')
            choices = (f'<ul style="padding:0;margin:12px 0">{"".join(links)}</ul>'
                       f'<p style="color:#555">{html.escape(frame("email_choose", lang))}</p>')
        footer = f"{html.escape(hospital)} · {html.escape(self.hospital.get('phone', ''))}"
        if unsubscribe:
            footer += (f'<br><a href="{html.escape(unsubscribe)}" style="color:#777">'
                       f'{html.escape(frame("email_unsubscribe", lang))}</a>')
        return (f'<!DOCTYPE html>\n<html lang="{lang}" dir="{direction}"><head><meta charset="utf-8">'
                f'<meta name="viewport" content="width=device-width"><title>{html.escape(subject)}</title></head>'
                f'<body dir="{direction}" style="font-family:Tahoma,Arial,sans-serif;text-align:{align};'
                f'line-height:1.6;color:#222">{paragraphs}{choices}'
                f'<hr style="border:0;border-top:1px solid #ddd"><p style="font-size:12px;color:#777">{footer}</p>'
                f'</body></html>\n')

    # --- receiving ---

    def _authorised(self, request: web.Request) -> bool:
        given = request.headers.get(SECRET_HEADER) or request.query.get("secret") or ""
        return hmac.compare_digest(given.encode(), self.secret.encode())

    async def inbound(self, request: web.Request) -> web.Response:
        if not self._authorised(request):
            return web.Response(status=403, text="forbidden")
        form = None
        try:
            form = await request.clone(client_max_size=MAX_POST).post()
            mail = parse_inbound(form)
        except Malformed as exc:
            return web.Response(status=400, text=str(exc))
        except ValueError as exc:  # an unreadable form body
            return web.Response(status=400, text=f"not an inbound-parse form: {exc}")
        finally:
            for value in (form or {}).values():
                if isinstance(value, web.FileField):  # attachments are not kept (yet)
                    value.file.close()
        if mail.automatic:
            return web.Response(text="ignored: automatic reply")
        if await self._unsubscribe_by_mail(mail):
            return web.Response(text="unsubscribed")
        if not mail.text:
            return web.Response(text="ignored: no new text")
        # Providers post a mail again when our answer is slow, sometimes several times at once:
        # one sender's mails are stored one at a time in this process, so the copies find the first.
        async with self._locks[hash(mail.sender) % len(self._locks)]:
            conversation_id = await self._thread(mail)
            await self.hub.router.receive(InboundMessage(
                self.name, mail.sender, mail.text, mail.message_id,
                metadata={"subject": mail.subject[:200], "conversation_id": conversation_id}), wait=False)
        return web.Response(text="ok")

    def _tokens(self, mail: InboundMail, prefix: str) -> list[str]:
        found = []
        for address in mail.recipients:
            local, _, domain = address.rpartition("@")
            if domain == self.reply_domain and local.startswith(prefix):
                found.append(local.removeprefix(prefix))
        return found

    async def _thread(self, mail: InboundMail) -> int | None:
        """The conversation this mail answers (by reply token, else by In-Reply-To/References);
        a new address answering it is tied to that conversation's patient."""
        tokens = self._tokens(mail, "reply+")
        named = next((c for t in tokens if (c := verify(self.secret, "reply", t))), None)
        if tokens and named is None:
            log.warning("an inbound e-mail carried a reply token that does not verify; threading by headers")
        async with self.hub.sessions() as session:
            if named is None and mail.references:
                named = await session.scalar(
                    select(Message.conversation_id).where(Message.channel == self.name, Message.direction == "out",
                                                          Message.provider_message_id.in_(mail.references))
                    .order_by(Message.id.desc()).limit(1))
            conversation = await session.get(Conversation, named) if named else None
            if conversation is None or conversation.channel != self.name:
                return None
            conversation_id, patient_id = conversation.id, conversation.patient_id
            known = await session.scalar(select(ChannelIdentity.id).where(
                ChannelIdentity.channel == self.name, ChannelIdentity.address == mail.sender))
            if known is None:
                session.add(ChannelIdentity(patient_id=patient_id, channel=self.name, address=mail.sender))
                # Writing to us is consent to be answered on the same channel (transactional only).
                session.add(Consent(patient_id=patient_id, channel=self.name,
                                    purpose=ConsentPurpose.transactional, status=ConsentStatus.granted,
                                    source="inbound:email"))
                session.add(JourneyEvent(patient_id=patient_id, kind="identity_created",
                                         reference=self.name, data={"via": "reply_token"}))
                try:
                    await session.commit()
                    log.info("new e-mail address tied to patient %s by its reply to conversation %s",
                             patient_id, conversation_id)
                except IntegrityError:  # the same mail, posted twice at once, got there first
                    await session.rollback()
        return conversation_id

    # --- unsubscribing ---

    async def _unsubscribe_by_mail(self, mail: InboundMail) -> bool:
        patients = {p for t in self._tokens(mail, "unsubscribe+") if (p := verify(self.secret, "unsubscribe", t))}
        for patient_id in patients:
            await self.revoke_marketing(patient_id, "list-unsubscribe:mailto")
        return bool(patients)

    async def revoke_marketing(self, patient_id: int, source: str) -> bool:
        """Record that the patient wants no more promotional e-mail; False for an unknown patient."""
        async with self.hub.sessions() as session:
            if await session.get(Patient, patient_id) is None:
                return False
            if await consent.current(session, patient_id, self.name, ConsentPurpose.marketing) != ConsentStatus.revoked:
                consent.record(session, patient_id, self.name, ConsentStatus.revoked, source=source,
                               purposes=(ConsentPurpose.marketing,))
                session.add(JourneyEvent(patient_id=patient_id, kind="consent_revoked", reference=self.name,
                                         data={"purpose": "marketing", "source": source}))
                await session.commit()
        return True

    async def _patient_for(self, request: web.Request) -> tuple[int | None, str]:
        patient_id = verify(self.secret, "unsubscribe", request.query.get("token", ""))
        language = "ar"
        if patient_id is not None:
            async with self.hub.sessions() as session:
                patient = await session.get(Patient, patient_id)
            if patient is None:
                return None, language
            language = patient.preferred_language
        return patient_id, "ar" if language == "ar" else "en"

    async def unsubscribe_page(self, request: web.Request) -> web.Response:
        # Mail scanners open every link in a message: a GET only asks, the button's POST unsubscribes.
        patient_id, lang = await self._patient_for(request)
        if patient_id is None:
            return web.Response(status=403, text="this unsubscribe link is not valid")
        hospital = self.hospital.get(f"name_{lang}", "")
        form = (f'<form method="post"><input type="hidden" name="List-Unsubscribe" value="One-Click">'
                f'<button type="submit">{html.escape(frame("email_unsubscribe", lang))}</button></form>')
        return self._page(lang, frame("email_unsubscribe_confirm", lang, hospital=hospital), form)

    async def unsubscribe(self, request: web.Request) -> web.Response:
        patient_id, lang = await self._patient_for(request)
        if patient_id is None or not await self.revoke_marketing(patient_id, "list-unsubscribe"):
            return web.Response(status=403, text="this unsubscribe link is not valid")
        return self._page(lang, frame("email_unsubscribed", lang, hospital=self.hospital.get(f"name_{lang}", "")))

    @staticmethod
    def _page(lang: str, sentence: str, extra: str = "") -> web.Response:
        direction = "rtl" if lang == "ar" else "ltr"
        return web.Response(content_type="text/html", text=(
            f'<!DOCTYPE html><html lang="{lang}" dir="{direction}"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width"></head><body style="font-family:sans-serif">'
            f'<p>{html.escape(sentence)}</p>{extra}</body></html>'))
