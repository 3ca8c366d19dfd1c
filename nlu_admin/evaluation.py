"""The evaluation of a training job as the console shows it: per language, the new model beside the
active one (intent precision, recall, F1; entity scores per extractor), and the confusion matrix
drawn as an SVG (no plotting library in the hub's environment)."""
from __future__ import annotations

from dataclasses import dataclass, field

from markupsafe import Markup, escape

AVERAGES = ("accuracy", "macro avg", "weighted avg", "micro avg")


@dataclass
class Row:
    label: str
    new: dict | None
    old: dict | None

    @property
    def delta_f1(self) -> float | None:
        if not self.new or not self.old:
            return None
        return self.new.get("f1-score", 0.0) - self.old.get("f1-score", 0.0)


@dataclass
class LanguageView:
    language: str
    n: int
    accuracy: tuple[float | None, float | None]
    macro_f1: tuple[float | None, float | None]
    weighted_f1: tuple[float | None, float | None]
    intents: list[Row]
    entities: list[tuple[str, Row]] = field(default_factory=list)  # (extractor, row) per entity
    confusion_new: Markup = Markup("")
    confusion_old: Markup = Markup("")
    errors: list[dict] = field(default_factory=list)


def _per_label(report: dict | None) -> dict[str, dict]:
    return {k: v for k, v in (report or {}).items() if k not in AVERAGES and isinstance(v, dict)}


def _f1(report: dict | None, key: str) -> float | None:
    row = (report or {}).get(key)
    return row.get("f1-score") if isinstance(row, dict) else None


def compare(evaluation: dict | None, axes: tuple[str, str] = ("expected", "predicted")) -> list[LanguageView]:
    if not evaluation:
        return []
    new_all, old_all = evaluation.get("candidate") or {}, evaluation.get("active") or {}
    views = []
    for language in sorted(new_all, key=lambda lang: (lang != "ar", lang)):
        new, old = new_all[language], old_all.get(language) or {}
        new_rows, old_rows = _per_label(new.get("report")), _per_label(old.get("report"))
        intents = [Row(label, new_rows.get(label), old_rows.get(label)) for label in sorted(set(new_rows) | set(old_rows))]
        entities = _entity_rows(new.get("entities") or {}, old.get("entities") or {})
        views.append(LanguageView(
            language=language, n=new.get("n") or 0,
            accuracy=(new.get("accuracy"), old.get("accuracy")),
            macro_f1=(_f1(new.get("report"), "macro avg"), _f1(old.get("report"), "macro avg")),
            weighted_f1=(_f1(new.get("report"), "weighted avg"), _f1(old.get("report"), "weighted avg")),
            intents=intents, entities=entities,
            confusion_new=confusion_svg(new.get("confusion") or {}, f"confusion-{language}-new", axes),
            confusion_old=confusion_svg(old.get("confusion") or {}, f"confusion-{language}-old", axes)
            if old else Markup(""),
            errors=new.get("errors") or []))
    return views


def _entity_rows(new: dict, old: dict) -> list[tuple[str, Row]]:
    """One row per entity type, from the extractor that reads it. `rasa test` scores every
    extractor on every annotated type (the time reader gets 0 on doctors); the reader of a type is
    the extractor with the best F1 on it."""
    reports = {x: (_per_label((new.get(x) or {}).get("report")), _per_label((old.get(x) or {}).get("report")))
               for x in sorted(set(new) | set(old))}
    labels = sorted({label for a, b in reports.values() for label in (*a, *b)})
    rows = []
    for label in labels:
        extractor = max(reports, key=lambda x: ((reports[x][0].get(label) or reports[x][1].get(label) or {})
                                                .get("f1-score", 0.0)))
        a, b = reports[extractor]
        rows.append((extractor, Row(label, a.get(label), b.get(label))))
    return rows


def confusion_svg(confusion: dict, element_id: str = "", axes: tuple[str, str] = ("expected", "predicted")) -> Markup:
    """Rows are the held-out intent, columns what the model predicted; a cell's colour is the share
    of its row, teal on the diagonal (right) and red elsewhere (confused), with the count written."""
    labels, matrix = confusion.get("labels") or [], confusion.get("matrix") or []
    if not labels:
        return Markup("")
    cell, left, top = 24, 170, 170
    size = len(labels) * cell
    width, height = left + size + 10, top + size + 30
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" class="confusion" id="{escape(element_id)}" '
             f'viewBox="0 0 {width} {height}" width="{width}" height="{height}" direction="ltr" '
             f'role="img" aria-label="confusion matrix" font-family="sans-serif" font-size="11">']
    parts.append(f'<text x="{left + size / 2}" y="12" text-anchor="middle" font-weight="bold">{escape(axes[1])} →</text>')
    parts.append(f'<text x="12" y="{top + size / 2}" text-anchor="middle" font-weight="bold" '
                 f'transform="rotate(-90 12 {top + size / 2})">{escape(axes[0])} →</text>')
    for i, label in enumerate(labels):
        y = top + i * cell + cell * 0.68
        parts.append(f'<text x="{left - 6}" y="{y}" text-anchor="end">{escape(label)}</text>')
        x = left + i * cell + cell * 0.68
        parts.append(f'<text x="{x}" y="{top - 6}" transform="rotate(-60 {x} {top - 6})">{escape(label)}</text>')
    for i, row in enumerate(matrix):
        total = sum(row) or 1
        for j, count in enumerate(row):
            share = count / total
            if count == 0:
                fill = "#f8fafc"
            elif i == j:
                fill = f"rgba(15,118,110,{0.15 + 0.85 * share:.3f})"
            else:
                fill = f"rgba(185,28,28,{0.25 + 0.75 * share:.3f})"
            x, y = left + j * cell, top + i * cell
            parts.append(f'<rect x="{x}" y="{y}" width="{cell}" height="{cell}" fill="{fill}" stroke="#e2e8f0">'
                         f'<title>{escape(labels[i])} → {escape(labels[j])}: {count}</title></rect>')
            if count:
                colour = "#fff" if share > 0.5 else "#0f172a"
                parts.append(f'<text x="{x + cell / 2}" y="{y + cell * 0.68}" text-anchor="middle" '
                             f'fill="{colour}">{count}</text>')
    parts.append("</svg>")
    return Markup("".join(parts))
