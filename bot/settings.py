"""Sila's configuration: environment variables prefixed SILA_ (see .env.example)."""
from functools import lru_cache
from pathlib import Path

from pydantic_settings import BaseSettings, SettingsConfigDict

ROOT = Path(__file__).resolve().parent.parent


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SILA_", env_file=".env", extra="ignore")

    database_url: str = "sqlite+aiosqlite:///var/sila.db"
    host: str = "127.0.0.1"
    port: int = 8080
    public_url: str = ""
    rasa_url: str = "http://127.0.0.1:5005"
    rasa_timeout: float = 15.0
    # Rasa calls Sila's action endpoint with ?token=…; empty means loopback callers only.
    actions_token: str = ""
    timezone: str = "Asia/Riyadh"
    default_language: str = "ar"
    hospital_file: Path = ROOT / "crm_store" / "demo" / "hospital.yml"
    redis_url: str = ""
    replay_interval: float = 3.0
    log_level: str = "INFO"
    # Channels to serve, by adapter name (channels/registry.py); each refuses to start without its secrets.
    channels: str = "webchat"

    # Twilio (SMS, WhatsApp, voice). The API URL is configurable so tests can point the official
    # client at a local fake; the auth token verifies X-Twilio-Signature on every webhook.
    twilio_account_sid: str = ""
    twilio_auth_token: str = ""
    twilio_api_url: str = ""
    twilio_sms_from: str = ""
    twilio_whatsapp_from: str = ""
    sms_rate: float = 1.0  # messages per second per sender: a long code allows about one
    whatsapp_rate: float = 80.0
    front_desk_number: str = ""

    # Telegram Bot API; the secret token is set on the webhook and checked on every update.
    telegram_bot_token: str = ""
    telegram_secret_token: str = ""
    telegram_api_url: str = "https://api.telegram.org"

    # E-mail: outbound SMTP with STARTTLS, inbound through a provider's parse webhook.
    smtp_host: str = ""
    smtp_port: int = 587
    smtp_username: str = ""
    smtp_password: str = ""
    smtp_starttls: bool = True
    email_from: str = ""
    email_reply_domain: str = ""
    email_inbound_secret: str = ""
    smtp_ca_file: str = ""  # CA bundle trusted for the SMTP relay; empty: the system's

    # Slack for staff: handoff notices in a channel, replies in their thread relayed to the patient.
    slack_bot_token: str = ""
    slack_signing_secret: str = ""
    slack_channel: str = ""
    slack_api_url: str = "https://slack.com/api/"

    # The hospital's EHR (FHIR R4). Empty URL: no EHR, Sila's own FHIR store only. Authenticate
    # with a static bearer token, or SMART backend services (client id + private key → JWT).
    ehr_fhir_url: str = ""
    ehr_token: str = ""
    ehr_token_url: str = ""
    ehr_client_id: str = ""
    ehr_private_key_file: str = ""
    ehr_key_id: str = ""
    ehr_scope: str = "system/*.read system/*.write"
    ehr_timeout: float = 10.0
    ehr_slot_interval: float = 300.0  # seconds between reads of the EHR's free slots

    @property
    def channel_names(self) -> tuple[str, ...]:
        return tuple(name.strip() for name in self.channels.split(",") if name.strip())

    @property
    def base_url(self) -> str:
        return self.public_url.rstrip("/") or f"http://{self.host}:{self.port}"


@lru_cache
def get_settings() -> Settings:
    return Settings()
