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

    @property
    def base_url(self) -> str:
        return self.public_url.rstrip("/") or f"http://{self.host}:{self.port}"


@lru_cache
def get_settings() -> Settings:
    return Settings()
