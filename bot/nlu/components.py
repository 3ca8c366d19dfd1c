"""Rasa 3.6 graph components for Sila's NLU pipeline (imported only inside .venv-rasa).

In config.yml:
  - name: bot.nlu.components.ArabicNormalizingTokenizer
  - name: bot.nlu.components.LanguageDetector
  - name: bot.nlu.components.TimeEntityExtractor        # timezone: Asia/Riyadh
  - name: bot.nlu.components.DirectoryEntityExtractor   # refresh_seconds: 60
"""
from __future__ import annotations

import logging
import os
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any, Dict, List, Optional, Text
from zoneinfo import ZoneInfo

import regex
from rasa.engine.graph import ExecutionContext, GraphComponent
from rasa.engine.recipes.default_recipe import DefaultV1Recipe
from rasa.engine.storage.resource import Resource
from rasa.engine.storage.storage import ModelStorage
from rasa.nlu.extractors.extractor import EntityExtractorMixin
from rasa.nlu.tokenizers.tokenizer import Token
from rasa.nlu.tokenizers.whitespace_tokenizer import WhitespaceTokenizer
from rasa.shared.nlu.constants import ENTITIES, TEXT
from rasa.shared.nlu.training_data.message import Message
from rasa.shared.nlu.training_data.training_data import TrainingData

from bot.nlu.arabic import normalize
from bot.nlu.directory import Directory, DirectoryUnavailable
from bot.nlu.language import detect
from bot.nlu.timeparse import DEFAULT_TZ, extract_times

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///var/sila.db"
DEFAULT_DIRECTORY_YAML = "crm_store/demo/hospital.yml"

# Arabic comma, semicolon, question mark, percent, quotes and ellipsis: not always split by the
# whitespace tokenizer when glued between words («بكرة،الساعة»).
_ARABIC_PUNCT = regex.compile(r"[،؛؟٪«»…]+")


@DefaultV1Recipe.register(DefaultV1Recipe.ComponentType.MESSAGE_TOKENIZER, is_trainable=False)
class ArabicNormalizingTokenizer(WhitespaceTokenizer):
    """Whitespace tokens with their original offsets, whose text is bot.nlu.arabic.normalize()d.

    CountVectorsFeaturizer then counts «بكرة», «بكره» and «بُكرة» as one word, and «١٠» as "10".
    """

    def tokenize(self, message: Message, attribute: Text) -> List[Token]:
        text = message.get(attribute)
        tokens: List[Token] = []
        for token in super().tokenize(message, attribute):
            offset = token.start
            for part in _ARABIC_PUNCT.split(text[token.start : token.end]):
                start = text.index(part, offset) if part else offset
                offset = start + len(part)
                norm = normalize(part)
                if norm:
                    end = start + len(part)
                    tokens.append(Token(norm, start, end, data=dict(token.data), lemma=norm))
        if not tokens and text:
            norm = normalize(text) or text
            tokens = [Token(norm, 0, len(text), lemma=norm)]
        return tokens


class _RuleBased(GraphComponent):
    """Rule-based components: configured, never trained, nothing to persist."""

    def __init__(self, config: Dict[Text, Any], resource: Optional[Resource] = None) -> None:
        self._config = {**self.get_default_config(), **config}
        self._resource = resource

    @classmethod
    def create(
        cls,
        config: Dict[Text, Any],
        model_storage: ModelStorage,
        resource: Resource,
        execution_context: ExecutionContext,
    ) -> GraphComponent:
        return cls(config, resource)

    def train(self, training_data: TrainingData) -> Resource:
        return self._resource


@DefaultV1Recipe.register(DefaultV1Recipe.ComponentType.MESSAGE_FEATURIZER, is_trainable=False)
class LanguageDetector(_RuleBased):
    """Sets `language` ("ar" | "en") on each message; the channel's hint is the fallback."""

    @staticmethod
    def get_default_config() -> Dict[Text, Any]:
        return {"default_language": "en"}

    def _default(self, message: Message) -> Text:
        metadata = message.get("metadata")
        if isinstance(metadata, dict) and metadata.get("language") in ("ar", "en"):
            return metadata["language"]
        return self._config.get("default_language") or "en"

    def _annotate(self, message: Message) -> None:
        text = message.get(TEXT)
        if isinstance(text, str):
            message.set("language", detect(text, default=self._default(message)), add_to_output=True)

    def process(self, messages: List[Message]) -> List[Message]:
        for message in messages:
            self._annotate(message)
        return messages

    def process_training_data(self, training_data: TrainingData) -> TrainingData:
        for example in training_data.training_examples:
            self._annotate(example)
        return training_data


class _TrivialExtractor(_RuleBased, EntityExtractorMixin):
    """Rule-based entity extractors: each adds the entities of one message."""

    def process_training_data(self, training_data: TrainingData) -> TrainingData:
        return training_data

    def _entities(self, message: Message) -> List[Dict[Text, Any]]:
        raise NotImplementedError

    def process(self, messages: List[Message]) -> List[Message]:
        for message in messages:
            if not isinstance(message.get(TEXT), str):
                continue
            try:
                found = self.add_extractor_name(self._entities(message))
            except Exception:  # an extractor must never break the parse
                log.exception("%s failed on a message", self.name)
                found = []
            message.set(ENTITIES, message.get(ENTITIES, []) + found, add_to_output=True)
        return messages


@DefaultV1Recipe.register(DefaultV1Recipe.ComponentType.ENTITY_EXTRACTOR, is_trainable=False)
class TimeEntityExtractor(_TrivialExtractor):
    """`time` entities: ISO 8601 values in the hospital's zone (bot.nlu.timeparse)."""

    @staticmethod
    def get_default_config() -> Dict[Text, Any]:
        return {"timezone": None}  # None: $SILA_TIMEZONE, else Asia/Riyadh

    def _zone(self) -> ZoneInfo:
        name = self._config.get("timezone") or os.environ.get("SILA_TIMEZONE") or DEFAULT_TZ
        try:
            return ZoneInfo(name)
        except Exception:
            log.error("unknown timezone %r; using %s", name, DEFAULT_TZ)
            return ZoneInfo(DEFAULT_TZ)

    def _entities(self, message: Message) -> List[Dict[Text, Any]]:
        zone = self._zone()
        now = datetime.now(zone)
        sent_at = getattr(message, "time", None)
        if isinstance(sent_at, (int, float)) and sent_at > 0:
            now = datetime.fromtimestamp(sent_at, zone)
        return [
            {
                "entity": "time",
                "value": m.value,
                "start": m.start,
                "end": m.end,
                "confidence_entity": 1.0,
                "additional_info": {"grain": m.grain, "part_of_day": m.part_of_day},
            }
            for m in extract_times(message.get(TEXT), now, zone.key)
        ]


@DefaultV1Recipe.register(DefaultV1Recipe.ComponentType.ENTITY_EXTRACTOR, is_trainable=False)
class DirectoryEntityExtractor(_TrivialExtractor):
    """`department` and `practitioner` entities whose value is the code in the CRM store.

    The directory is read from the hub's database (SILA_DATABASE_URL) on first use and again at
    most every `refresh_seconds`, so doctors added in the console are recognised without
    retraining. An unreachable or empty database falls back to the demo hospital file.
    """

    @staticmethod
    def get_default_config() -> Dict[Text, Any]:
        return {
            "database_url": None,  # None: $SILA_DATABASE_URL, else sqlite var/sila.db
            "fallback_yaml": DEFAULT_DIRECTORY_YAML,
            "refresh_seconds": 60,
        }

    def __init__(self, config: Dict[Text, Any], resource: Optional[Resource] = None) -> None:
        super().__init__(config, resource)
        self._directory: Optional[Directory] = None
        self._loaded_at = float("-inf")
        self._lock = threading.Lock()

    def _fallback_path(self) -> Optional[Path]:
        configured = self._config.get("fallback_yaml")
        if not configured:
            return None
        for candidate in (Path(configured), REPO_ROOT / configured):
            if candidate.is_file():
                return candidate
        return None

    def _load(self, previous: Optional[Directory]) -> Directory:
        url = self._config.get("database_url") or os.environ.get("SILA_DATABASE_URL") or DEFAULT_DATABASE_URL
        loaded: Optional[Directory] = None
        try:
            loaded = Directory.from_database(url)
        except DirectoryUnavailable as exc:
            log.warning("directory database unavailable: %s", exc)
        except Exception:
            log.exception("directory database could not be read")
        if loaded is not None and len(loaded):
            return loaded
        if loaded is None and previous is not None and previous.source == "database":
            return previous  # a momentary outage: keep what the database last said
        fallback = self._fallback_path()
        if fallback is not None:
            try:
                return Directory.from_yaml(fallback)
            except Exception:
                log.exception("fallback directory %s could not be read", fallback)
        return loaded if loaded is not None else Directory([], source="empty")

    def directory(self) -> Directory:
        """The current directory, reloaded when older than `refresh_seconds`."""
        refresh = float(self._config.get("refresh_seconds") or 60)
        with self._lock:
            if self._directory is None or time.monotonic() - self._loaded_at >= refresh:
                self._directory = self._load(self._directory)
                self._loaded_at = time.monotonic()
                log.debug("directory: %d entries from %s", len(self._directory), self._directory.source)
            return self._directory

    def _entities(self, message: Message) -> List[Dict[Text, Any]]:
        return [
            {
                "entity": m.kind,
                "value": m.code,
                "start": m.start,
                "end": m.end,
                "confidence_entity": 1.0,
            }
            for m in self.directory().find(message.get(TEXT))
        ]
