"""The NLU training data in `nlu_data/`: one Rasa YAML file per language, edited in place.

Files are read and written in a worker thread, under an exclusive lock so that two admins (or two
hub workers) saving at once never lose each other's change; a write goes to a temporary file that
replaces the original, so a crash leaves the old file or the new one, never half of each.
"""
from __future__ import annotations

import fcntl
import hashlib
import os
import re
import tempfile
from collections import defaultdict
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import yaml

from bot.nlu.arabic import normalize
from nlu_admin.yamlfile import AnnotationError, NluFile, clean_example, parse_example

LANGUAGES = ("ar", "en")


class Conflict(Exception):
    """The example changed on disk since the page was shown (someone else saved first)."""


@dataclass(frozen=True)
class Change:
    action: str  # add | edit | delete
    language: str
    intent: str
    before: str | None
    after: str | None
    new_intent: str | None = None


@dataclass(frozen=True)
class DataWarning:
    kind: str  # duplicate | too_few | held_out
    intent: str
    language: str
    text: str = ""
    others: tuple[str, ...] = ()
    count: int = 0


@dataclass
class Snapshot:
    training: dict[str, NluFile]
    held_out: dict[str, NluFile]
    intents: list[str]
    entities: set[str]

    def examples(self, language: str, intent: str) -> list[str]:
        file = self.training.get(language)
        block = file.intents().get(intent) if file else None
        return list(block.examples) if block else []


def dedupe_key(raw: str) -> str:
    """Two examples are the same utterance when they differ only in spelling variants, case,
    spacing or end punctuation (Arabic letters folded as the tokenizer folds them)."""
    try:
        plain, _ = parse_example(raw)
    except AnnotationError:
        plain = raw
    return " ".join(re.sub(r"[\s.,!?؟،…]+$", "", normalize(plain)).split())


def _lock_path(data_dir: Path) -> Path:
    digest = hashlib.sha256(str(data_dir.resolve()).encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"sila-nlu-{digest}.lock"


@contextmanager
def locked(data_dir: Path):
    """Exclusive use of a data directory's files, across threads and hub workers on this machine
    (the lock file lives outside the directory, so it never shows in version control)."""
    with open(_lock_path(data_dir), "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _write(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, path.stat().st_mode & 0o777 if path.exists() else 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class NluData:
    """The training files of one data directory (`SILA_NLU_DATA_DIR`) and the domain's labels."""

    def __init__(self, data_dir: Path, domain_file: Path):
        self.data_dir = Path(data_dir)
        self.domain_file = Path(domain_file)

    def training_file(self, language: str) -> Path:
        return self.data_dir / "nlu" / f"{language}.yml"

    def held_out_file(self, language: str) -> Path:
        return self.data_dir / "test" / f"{language}.yml"

    def domain(self) -> tuple[list[str], set[str]]:
        with open(self.domain_file, encoding="utf-8") as handle:
            domain = yaml.safe_load(handle) or {}
        intents = [next(iter(i)) if isinstance(i, dict) else str(i) for i in domain.get("intents") or []]
        entities = {next(iter(e)) if isinstance(e, dict) else str(e) for e in domain.get("entities") or []}
        return intents, entities

    def load(self) -> Snapshot:
        intents, entities = self.domain()
        training, held_out = {}, {}
        for language in LANGUAGES:
            for target, path in ((training, self.training_file(language)), (held_out, self.held_out_file(language))):
                if path.exists():
                    target[language] = NluFile.parse(path.read_text(encoding="utf-8"))
        return Snapshot(training, held_out, intents, entities)

    def _change(self, language: str, apply) -> Change:
        if language not in LANGUAGES:
            raise AnnotationError(f"no training file for language {language!r}")
        path = self.training_file(language)
        with locked(self.data_dir):
            text = path.read_text(encoding="utf-8") if path.exists() else 'version: "3.1"\n\nnlu:\n'
            file = NluFile.parse(text)
            change = apply(file)
            file.remove_empty()
            _write(path, file.dumps())
        return change

    def _checked(self, intent: str, raw: str) -> str:
        intents, entities = self.domain()
        if intent not in intents:
            raise AnnotationError(f"{intent!r} is not an intent of the domain")
        return clean_example(raw, entities)

    def add(self, language: str, intent: str, raw: str) -> Change:
        raw = self._checked(intent, raw)

        def apply(file: NluFile) -> Change:
            block = file.block(intent, create=True)
            if not block.editable:
                raise AnnotationError(f"the {intent} block has a shape this editor does not change; edit the file")
            if raw in block.examples:
                raise Conflict(f"«{raw}» is already an example of {intent}")
            block.examples.append(raw)
            block.raw = None
            return Change("add", language, intent, None, raw)

        return self._change(language, apply)

    def edit(self, language: str, intent: str, old: str, new: str, new_intent: str | None = None) -> Change:
        """Change an example's words or annotations, or move it to another intent."""
        target = new_intent or intent
        new = self._checked(target, new)

        def apply(file: NluFile) -> Change:
            block = file.block(intent)
            if block is None or old not in block.examples:
                raise Conflict(f"«{old}» is no longer an example of {intent}; reload the page")
            destination = file.block(target, create=True)
            if not (block.editable and destination.editable):
                raise AnnotationError("this block has a shape this editor does not change; edit the file")
            index = block.examples.index(old)
            if new != old and new in destination.examples:
                raise Conflict(f"«{new}» is already an example of {target}")
            if target == intent:
                block.examples[index] = new
            else:
                del block.examples[index]
                if new not in destination.examples:
                    destination.examples.append(new)
                destination.raw = None
            block.raw = None
            return Change("edit", language, intent, old, new, new_intent=target if target != intent else None)

        return self._change(language, apply)

    def delete(self, language: str, intent: str, raw: str) -> Change:
        def apply(file: NluFile) -> Change:
            block = file.block(intent)
            if block is None or raw not in block.examples:
                raise Conflict(f"«{raw}» is no longer an example of {intent}; reload the page")
            if not block.editable:
                raise AnnotationError("this block has a shape this editor does not change; edit the file")
            block.examples.remove(raw)
            block.raw = None
            return Change("delete", language, intent, raw, None)

        return self._change(language, apply)


def warnings(snapshot: Snapshot, min_examples: int) -> list[DataWarning]:
    """What an admin should fix before training: an utterance taught as two intents, an intent with
    too few examples in a language, and held-out utterances copied into the training data (they
    would make the evaluation look better than the bot is)."""
    found: list[DataWarning] = []
    seen: dict[str, set[tuple[str, str]]] = defaultdict(set)
    shown: dict[str, str] = {}
    for language, file in snapshot.training.items():
        for intent, block in file.intents().items():
            for raw in block.examples:
                key = dedupe_key(raw)
                seen[key].add((intent, language))
                shown.setdefault(key, raw)
    for key, places in sorted(seen.items()):
        intents = sorted({intent for intent, _ in places})
        if len(intents) > 1:
            for intent in intents:
                languages = sorted({lang for i, lang in places if i == intent})
                found.append(DataWarning("duplicate", intent, ",".join(languages), shown[key],
                                      tuple(i for i in intents if i != intent)))
    for intent in snapshot.intents:
        for language in snapshot.training:
            count = len(snapshot.examples(language, intent))
            if count < min_examples:
                found.append(DataWarning("too_few", intent, language, count=count))
    for language, file in snapshot.held_out.items():
        for intent, block in file.intents().items():
            for raw in block.examples:
                key = dedupe_key(raw)
                if key in seen:
                    found.append(DataWarning("held_out", intent, language, shown[key],
                                          tuple(sorted({i for i, _ in seen[key]}))))
    return found
