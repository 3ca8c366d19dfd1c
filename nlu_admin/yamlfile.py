"""One Rasa NLU YAML file, read and written back as people wrote it.

Admins' edits land in version control, so a reviewer must see only what changed: the header
comments, the order of the intents, blocks nobody touched and anything this module does not
understand (synonyms, regexes, lookups, metadata) are written back byte for byte; an edited intent
block is written in the files' own shape (`- intent:` / `examples: |` / `- example`).

Examples are kept as written, with Rasa's inline entity annotations: `[tomorrow](time)`,
`[Dr Khalid](practitioner:dr-khalid-alharbi)` or `[x]{"entity": "…", "value": "…"}`.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

# Rasa's own pattern (rasa/shared/nlu/training_data/entities_parser.py), without entity lists.
ENTITY = re.compile(r"\[(?P<text>[^\]]+?)\](?:\((?P<entity>[^:)]+?)(?::(?P<value>[^)]+))?\)|\{(?P<dict>[^}]+?)\})")
_INTENT_LINE = re.compile(r"^- intent:\s*(?P<name>\S+)\s*$")
_EXAMPLES_LINE = re.compile(r"^  examples:\s*\|[-+]?\s*$")
_EXAMPLE_LINE = re.compile(r"^    - (?P<text>.*)$")


class AnnotationError(ValueError):
    """An example whose entity annotations Rasa would not read as meant."""


@dataclass(frozen=True)
class Annotation:
    start: int
    end: int
    entity: str
    value: str | None = None

    def as_dict(self, plain: str) -> dict:
        return {"start": self.start, "end": self.end, "entity": self.entity,
                "value": self.value or plain[self.start:self.end], "text": plain[self.start:self.end]}


def parse_example(raw: str) -> tuple[str, list[Annotation]]:
    """The plain text Rasa trains on and the entities annotated in it."""
    plain, annotations, last = [], [], 0
    length = 0
    for match in ENTITY.finditer(raw):
        before = raw[last:match.start()]
        plain.append(before)
        length += len(before)
        text = match["text"]
        if match["dict"] is not None:
            try:
                attributes = json.loads("{" + match["dict"] + "}")
            except json.JSONDecodeError as exc:
                raise AnnotationError(f"unreadable entity annotation {match.group(0)!r}") from exc
            entity, value = attributes.get("entity"), attributes.get("value")
            if not entity:
                raise AnnotationError(f"an annotation without an entity: {match.group(0)!r}")
        else:
            entity, value = match["entity"].strip(), match["value"]
        annotations.append(Annotation(length, length + len(text), str(entity), None if value is None else str(value)))
        plain.append(text)
        length += len(text)
        last = match.end()
    plain.append(raw[last:])
    return "".join(plain), annotations


def format_example(plain: str, annotations: list[Annotation]) -> str:
    """The inverse of `parse_example`: annotations written inline, Rasa's short form."""
    out, last = [], 0
    for a in sorted(annotations, key=lambda a: a.start):
        if a.start < last or a.end > len(plain) or a.start >= a.end:
            raise AnnotationError("entity annotations overlap or fall outside the text")
        label = a.entity if a.value in (None, plain[a.start:a.end]) else f"{a.entity}:{a.value}"
        out += [plain[last:a.start], f"[{plain[a.start:a.end]}]({label})"]
        last = a.end
    out.append(plain[last:])
    return "".join(out)


def clean_example(raw: str, entities: set[str] | None = None) -> str:
    """An example as it may be written into a block: one line, annotations Rasa reads as meant."""
    raw = " ".join(raw.split())
    if not raw:
        raise AnnotationError("an empty example")
    plain, annotations = parse_example(raw)
    if any(ch in plain for ch in "[]"):
        raise AnnotationError("square brackets are only for entity annotations: [words](entity)")
    if entities is not None:
        unknown = sorted({a.entity for a in annotations} - entities)
        if unknown:
            raise AnnotationError(f"unknown entity {', '.join(unknown)} (the domain has {', '.join(sorted(entities))})")
    return raw


@dataclass
class Block:
    """One item of the `nlu:` list; `raw` is its original text while nobody has changed it."""

    intent: str | None
    examples: list[str] = field(default_factory=list)
    raw: str | None = None
    editable: bool = True

    def render(self, separator: str) -> str:
        if self.raw is not None:
            return self.raw
        lines = [f"- intent: {self.intent}", "  examples: |", *(f"    - {e}" for e in self.examples)]
        return "\n".join(lines) + "\n" + separator


@dataclass
class NluFile:
    header: str
    blocks: list[Block]

    @classmethod
    def parse(cls, text: str) -> "NluFile":
        lines = text.splitlines(keepends=True)
        start = next((i + 1 for i, line in enumerate(lines) if line.rstrip() == "nlu:"), None)
        if start is None:
            return cls(text, [])
        header, body = "".join(lines[:start]), lines[start:]
        # Blank lines and comments before the first item stay with the header.
        while body and not body[0].startswith("- "):
            header += body.pop(0)
        blocks, current = [], []
        for line in body:
            if line.startswith("- ") and current:
                blocks.append(cls._block("".join(current)))
                current = []
            current.append(line)
        if current:
            blocks.append(cls._block("".join(current)))
        return cls(header, blocks)

    @staticmethod
    def _block(raw: str) -> Block:
        lines = raw.rstrip("\n").split("\n")
        while lines and not lines[-1].strip():
            lines.pop()
        head = _INTENT_LINE.match(lines[0]) if lines else None
        if head is None:
            return Block(intent=None, raw=raw, editable=False)
        if len(lines) < 2 or not _EXAMPLES_LINE.match(lines[1]):
            return Block(intent=head["name"], raw=raw, editable=False)
        examples = []
        for line in lines[2:]:
            match = _EXAMPLE_LINE.match(line)
            if match is None:
                return Block(intent=head["name"], raw=raw, editable=False)
            examples.append(match["text"].strip())
        return Block(intent=head["name"], examples=examples, raw=raw)

    def dumps(self) -> str:
        out = [self.header]
        for i, block in enumerate(self.blocks):
            last = i == len(self.blocks) - 1
            text = block.render("" if last else "\n")
            if out and not out[-1].endswith("\n"):
                out[-1] += "\n"
            if i and block.raw is None and not out[-1].endswith("\n\n"):
                out[-1] += "\n"  # a new or changed block after an untouched one: keep the blank line
            out.append(text)
        return "".join(out).rstrip("\n") + "\n"

    def remove_empty(self) -> None:
        """An intent block left without examples goes: Rasa refuses an empty one."""
        self.blocks = [b for b in self.blocks if b.intent is None or b.raw is not None or b.examples]

    def intents(self) -> dict[str, Block]:
        return {b.intent: b for b in self.blocks if b.intent is not None}

    def block(self, intent: str, create: bool = False) -> Block | None:
        found = self.intents().get(intent)
        if found is None and create:
            found = Block(intent=intent)
            self.blocks.append(found)
        return found
