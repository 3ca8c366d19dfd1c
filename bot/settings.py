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

    # Campaigns and automations (campaigns/, issue 6). Quiet hours are local hours in the
    # recipient's zone (from their phone number, else SILA_TIMEZONE); sends are deferred past them.
    # The frequency cap counts marketing messages per patient over a rolling window of days.
    campaigns_enabled: bool = True
    campaign_quiet_start: int = 21
    campaign_quiet_end: int = 8
    campaign_frequency_cap: int = 3
    campaign_frequency_days: int = 7
    campaign_misfire_grace: float = 6 * 3600  # a start missed by more than this is not sent late
    campaign_lease: float = 60.0  # a crashed worker's campaign is taken over after this
    campaign_poll: float = 5.0  # how often each worker looks at the shared schedule
    campaign_concurrency: int = 32  # messages in flight at once per campaign (each mostly waits on the provider)
    automation_interval: float = 60.0

    # Admins train the bot (nlu_admin/, issue 9). The training data and the models directory
    # (models/sila.tar.gz is the active model Rasa loads at start); tests point both at copies.
    # A new model is loaded into every Rasa server of SILA_RASA_MODEL_URLS (comma-separated;
    # empty: SILA_RASA_URL) with PUT /model, which needs Rasa's --enable-api (and --auth-token
    # = SILA_RASA_TOKEN when set); those servers must see the models directory at the same path.
    nlu_data_dir: Path = ROOT / "nlu_data"
    models_dir: Path = ROOT / "models"
    rasa_model_urls: str = ""
    rasa_token: str = ""
    nlu_review_confidence: float = 0.6  # patient messages understood below this go to review
    nlu_min_examples: int = 10  # fewer examples of an intent in one language is a warning
    nlu_keep_models: int = 5  # trained models kept besides the active and the previous one
    nlu_model_load_timeout: float = 300.0

    # The patient portal at /portal (portal/, issue 8). A phone number typed without its country
    # code is read in SILA_PORTAL_PHONE_REGION; idle portal sessions end after
    # SILA_PORTAL_IDLE_MINUTES. Sign-in codes go by SMS, or WhatsApp when that is the patient's
    # channel: outside WhatsApp's 24-hour window only an approved template may be sent
    # (SILA_PORTAL_WHATSAPP_CODE_TEMPLATE, a ContentSid whose variable 1 is the code), else SMS.
    portal_enabled: bool = True
    portal_phone_region: str = "SA"
    portal_idle_minutes: int = 15
    portal_whatsapp_code_template: str = ""

    # Surveys (surveys/, issue 7). An unfinished survey closes after SILA_SURVEY_EXPIRY_DAYS (a
    # definition may set its own). Automatic surveys are named by code (empty: none): after a
    # fulfilled visit (once its end is SILA_SURVEY_AFTER_VISIT_HOURS past, for up to
    # SILA_SURVEY_LOOKBACK_DAYS) and after a conversation staff resolved; they skip a patient
    # surveyed within SILA_SURVEY_COOLDOWN_DAYS. A patient back after SILA_SURVEY_BREAK_HOURS is
    # welcomed back to the question. Definitions are loaded from SILA_SURVEY_DEFINITIONS_DIR.
    survey_expiry_days: float = 3.0
    survey_cooldown_days: float = 7.0
    survey_after_visit: str = "post-visit-nps"
    survey_after_visit_hours: float = 2.0
    survey_lookback_days: float = 3.0
    survey_after_chat: str = "post-chat-csat"
    survey_break_hours: float = 12.0
    survey_interval: float = 60.0  # seconds between the sweeps (expiry, visits)
    survey_definitions_dir: Path = ROOT / "surveys" / "definitions"

    @property
    def channel_names(self) -> tuple[str, ...]:
        return tuple(name.strip() for name in self.channels.split(",") if name.strip())

    @property
    def base_url(self) -> str:
        return self.public_url.rstrip("/") or f"http://{self.host}:{self.port}"


@lru_cache
def get_settings() -> Settings:
    return Settings()
