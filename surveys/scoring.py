"""The figures a survey reports.

NPS (Net Promoter Score): of the patients who gave a 0-10 "would you recommend us" score, the
percentage of promoters (9-10) minus the percentage of detractors (0-6); passives (7-8) count in
the total only. It runs from -100 to +100. CSAT: the average 1-5 satisfaction score, with the
share of satisfied patients (4-5). Response rate: surveys with at least one answer over surveys
sent. Each is None when there is nothing to compute it from."""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

PROMOTER, DETRACTOR = 9, 6  # promoters score at least 9, detractors at most 6


@dataclass(frozen=True)
class Nps:
    n: int = 0
    promoters: int = 0
    passives: int = 0
    detractors: int = 0

    @property
    def score(self) -> float | None:
        return round(100.0 * (self.promoters - self.detractors) / self.n, 1) if self.n else None

    def share(self, part: int) -> float | None:
        return round(100.0 * part / self.n, 1) if self.n else None


@dataclass(frozen=True)
class Csat:
    n: int = 0
    total: int = 0
    satisfied: int = 0

    @property
    def average(self) -> float | None:
        return round(self.total / self.n, 2) if self.n else None

    @property
    def satisfied_share(self) -> float | None:
        return round(100.0 * self.satisfied / self.n, 1) if self.n else None


def nps(scores: Iterable[int | None]) -> Nps:
    given = [s for s in scores if s is not None]
    promoters = sum(s >= PROMOTER for s in given)
    detractors = sum(s <= DETRACTOR for s in given)
    return Nps(len(given), promoters, len(given) - promoters - detractors, detractors)


def csat(scores: Iterable[int | None]) -> Csat:
    given = [s for s in scores if s is not None]
    return Csat(len(given), sum(given), sum(s >= 4 for s in given))


def rate(responded: int, sent: int) -> float | None:
    return round(100.0 * responded / sent, 1) if sent else None
