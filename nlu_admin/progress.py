"""How far a training run is, read from what `rasa train` prints.

Rasa logs "Starting to train component 'X'" for each graph node it trains and draws tqdm bars
("Epochs:  34%|███▍ | 17/50 [...]") that redraw with carriage returns. DIET's epochs are most of
the time on two cores (about 75 of 120 s), so the bar below is weighted that way.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

_COMPONENT = re.compile(r"Starting to train component '(?P<name>[^']+)'")
_EPOCHS = re.compile(r"Epochs:\s+\d+%\|[^|]*\|\s*(?P<done>\d+)/(?P<total>\d+)")
_TRACKERS = re.compile(r"Processed trackers")
_SAVED = re.compile(r"Your Rasa model is trained and saved")
# Share of the whole job at the start of each stage; evaluation takes the rest.
FEATURIZING, CLASSIFIER, DIALOGUE, PACKAGING, EVALUATING, DONE = 0.03, 0.10, 0.80, 0.86, 0.88, 1.0
_NOISE = ("Warning", "warn(", "deprecated", "  from ", "  warnings.", "  rasa.shared", "[0m", "  return ")


def lines(chunk_buffer: str) -> tuple[list[str], str]:
    """Complete lines (ended by a newline or a carriage return) and the unfinished rest."""
    parts = re.split(r"[\r\n]", chunk_buffer)
    return [p for p in parts[:-1] if p.strip()], parts[-1]


@dataclass
class TrainingProgress:
    stage: str = "preparing"
    fraction: float = 0.0
    detail: str = ""

    def feed(self, line: str) -> bool:
        """Take one line of Rasa's output; True when the progress shown should change."""
        before = (self.stage, round(self.fraction, 3), self.detail)
        if match := _EPOCHS.search(line):
            done, total = int(match["done"]), int(match["total"]) or 1
            self.stage, self.detail = "training_classifier", f"{done}/{total}"
            self.fraction = CLASSIFIER + (DIALOGUE - CLASSIFIER) * done / total
        elif match := _COMPONENT.search(line):
            name = match["name"]
            if name in ("RulePolicy", "MemoizationPolicy", "TEDPolicy", "UnexpecTEDIntentPolicy"):
                self.stage, self.fraction = "training_dialogue", max(self.fraction, DIALOGUE)
            elif name.startswith("DIET"):
                self.stage, self.fraction = "training_classifier", max(self.fraction, CLASSIFIER)
            else:
                self.stage = "featurizing"
                self.fraction = min(max(self.fraction, FEATURIZING) + 0.01, CLASSIFIER)
            self.detail = name
        elif _TRACKERS.search(line):
            self.stage, self.fraction = "training_dialogue", max(self.fraction, DIALOGUE)
        elif _SAVED.search(line):
            self.stage, self.fraction, self.detail = "packaging", max(self.fraction, PACKAGING), ""
        return before != (self.stage, round(self.fraction, 3), self.detail)

    def evaluating(self, done: int, total: int, what: str) -> None:
        self.stage, self.detail = "evaluating", what
        self.fraction = EVALUATING + (DONE - EVALUATING) * 0.99 * done / max(total, 1)


def worth_keeping(line: str) -> bool:
    """Lines kept for the job's log: Rasa's own messages, not library deprecation noise or bars."""
    return not (any(n in line for n in _NOISE) or _EPOCHS.search(line) or "it/s]" in line or "s/it" in line)
