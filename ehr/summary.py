"""The clinical summary of one patient, read from the FHIR resources stored for them.

`build_summary(resources, language)` takes resource dicts as they come from an EHR or a bundle
(Synthea's included) and returns plain JSON-ready sections for the console and the portal. Any
field may be missing: a section lists what it can and never fails on what it cannot read."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timezone
from typing import Any, Iterable

from ehr.resources import codes, concept_text, listed, parse_date, parse_datetime

SECTIONS = ("conditions", "allergies", "medications", "results", "reports", "immunizations",
            "care_team", "coverage", "encounters")

TITLES = {
    "conditions": {"en": "Conditions", "ar": "الحالات المرضية"},
    "allergies": {"en": "Allergies", "ar": "الحساسية"},
    "medications": {"en": "Medications", "ar": "الأدوية"},
    "results": {"en": "Test results and vital signs", "ar": "نتائج الفحوصات والعلامات الحيوية"},
    "reports": {"en": "Reports", "ar": "التقارير"},
    "immunizations": {"en": "Immunizations", "ar": "التطعيمات"},
    "care_team": {"en": "Care team", "ar": "فريق الرعاية"},
    "coverage": {"en": "Insurance", "ar": "التأمين"},
    "encounters": {"en": "Visits", "ar": "الزيارات"},
}

STATUS_LABELS = {
    "active": ("Active", "نشط"), "recurrence": ("Recurrence", "معاودة"), "relapse": ("Relapse", "انتكاس"),
    "inactive": ("Inactive", "غير نشط"), "remission": ("In remission", "في حالة هدأة"),
    "resolved": ("Resolved", "زالت"), "completed": ("Completed", "مكتمل"), "stopped": ("Stopped", "متوقف"),
    "on-hold": ("On hold", "معلّق"), "cancelled": ("Cancelled", "ملغى"), "draft": ("Draft", "مسودة"),
    "not-done": ("Not done", "لم يُنفّذ"), "finished": ("Finished", "منتهية"),
    "in-progress": ("In progress", "جارية"), "planned": ("Planned", "مخطط لها"), "final": ("Final", "نهائي"),
    "preliminary": ("Preliminary", "أولي"), "amended": ("Amended", "معدّل"), "corrected": ("Corrected", "مصحّح"),
    "registered": ("Registered", "مسجّل"), "unknown": ("Unknown", "غير معروف"),
    "high": ("High", "عالية"), "low": ("Low", "منخفضة"), "unable-to-assess": ("Unable to assess", "تعذّر التقييم"),
}

FLAG_LABELS = {
    "N": ("Normal", "طبيعي"), "H": ("High", "مرتفع"), "L": ("Low", "منخفض"), "A": ("Abnormal", "غير طبيعي"),
    "HH": ("Critically high", "مرتفع جدًا"), "LL": ("Critically low", "منخفض جدًا"),
    "AA": ("Critically abnormal", "غير طبيعي بشدة"), "POS": ("Positive", "إيجابي"), "NEG": ("Negative", "سلبي"),
}

LOINC = "http://loinc.org"
_OBSERVATION_INTERPRETATION = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"
# v3 ObservationInterpretation codes that mean "within / outside what is expected".
_NORMAL = {"N", "NEG", "ND", "NR", "S"}
_ABNORMAL = {"A", "AA", "H", "HH", "HU", "HX", "L", "LL", "LU", "LX", ">", "<", "POS", "DET", "R", "W", "CAR"}
_INTERPRETATION_WORDS = {"normal": "N", "high": "H", "low": "L", "abnormal": "A", "critical": "AA",
                         "critically high": "HH", "critically low": "LL", "positive": "POS", "negative": "NEG"}
_SKIPPED = {"entered-in-error", "cancelled"}
_ACTIVE = {"active", "recurrence", "relapse", None}

# UCUM units as people write them.
_UNITS = {"mm[Hg]": "mmHg", "Cel": "°C", "[degF]": "°F", "10*3/uL": "×10³/µL", "10*6/uL": "×10⁶/µL",
          "kg/m2": "kg/m²", "mL/min/{1.73_m2}": "mL/min/1.73 m²", "{score}": "", "{T-score}": "", "/min": "/min",
          "{beats}/min": "/min", "{breaths}/min": "/min", "%": "%"}


@dataclass(frozen=True)
class Range:
    """Adult normal range: `low` ≤ value, and value ≤ `high` (or < `high` when `below` is set,
    for guideline cut-offs such as "total cholesterol < 200 mg/dL")."""

    low: float | None
    high: float | None
    units: tuple[str, ...]
    below: bool = False


# Adult reference ranges for LOINC codes Synthea emits, used only when an Observation carries neither
# an interpretation nor a reference range of its own, and only for adults. Sources:
# - lipids: NCEP ATP III (JAMA 2001;285:2486): total < 200, LDL < 130 (130-159 borderline high),
#   HDL ≥ 40, triglycerides < 150 mg/dL.
# - glucose and HbA1c: ADA Standards of Care, "Classification and Diagnosis of Diabetes": fasting
#   plasma glucose 70-99 mg/dL normal (≥ 100 impaired), HbA1c < 5.7 %.
# - blood pressure: 2017 ACC/AHA guideline, stage 1 hypertension from 130 systolic / 80 diastolic;
#   AHA's "low blood pressure" below 90/60 mmHg.
# - BMI: WHO, 18.5-24.9 kg/m² normal weight.
# - eGFR: KDIGO 2012 CKD guideline, < 60 mL/min/1.73 m² is decreased kidney function.
# - haemoglobin: Mayo Clinic hemoglobin test, 13.2-16.6 g/dL men, 11.6-15.0 g/dL women.
# - creatinine, electrolytes, urea nitrogen, calcium, blood counts: MedlinePlus lab test pages
#   (creatinine 0.7-1.3 mg/dL men, 0.6-1.1 women; sodium 135-145, potassium 3.7-5.2, chloride
#   96-106, bicarbonate 23-29 mmol/L; BUN 6-20 mg/dL; calcium 8.5-10.2 mg/dL; WBC 4.5-11.0,
#   platelets 150-450 ×10³/µL).
# - temperature: CDC's fever threshold, 38.0 °C; below 35 °C is hypothermia.
# - heart rate 60-100/min, respiratory rate 12-20/min, oxygen saturation ≥ 95 % (MedlinePlus, "Vital signs").
_MG_DL, _MMOL_L = ("mg/dL",), ("mmol/L", "meq/L", "mEq/L")
_ADULT_RANGES: dict[str, Range | dict[str | None, Range]] = {
    "2093-3": Range(None, 200, _MG_DL, below=True),       # Total cholesterol
    "18262-6": Range(None, 130, _MG_DL, below=True),      # LDL cholesterol (direct)
    "13457-7": Range(None, 130, _MG_DL, below=True),      # LDL cholesterol (calculated)
    "2089-1": Range(None, 130, _MG_DL, below=True),       # LDL cholesterol
    "2085-9": Range(40, None, _MG_DL),                    # HDL cholesterol
    "2571-8": Range(None, 150, _MG_DL, below=True),       # Triglycerides
    "2339-0": Range(70, 100, _MG_DL, below=True),         # Glucose, blood
    "2345-7": Range(70, 100, _MG_DL, below=True),         # Glucose, serum/plasma
    "4548-4": Range(None, 5.7, ("%",), below=True),       # Hemoglobin A1c
    "17856-6": Range(None, 5.7, ("%",), below=True),      # Hemoglobin A1c (HPLC)
    "8480-6": Range(90, 130, ("mm[Hg]", "mmHg"), below=True),  # Systolic blood pressure
    "8462-4": Range(60, 80, ("mm[Hg]", "mmHg"), below=True),   # Diastolic blood pressure
    "39156-5": Range(18.5, 25, ("kg/m2",), below=True),   # Body mass index
    "33914-3": Range(60, None, ("mL/min/{1.73_m2}",)),    # eGFR (MDRD)
    "62238-1": Range(60, None, ("mL/min/{1.73_m2}",)),    # eGFR (CKD-EPI)
    "98979-8": Range(60, None, ("mL/min/{1.73_m2}",)),    # eGFR (CKD-EPI 2021)
    "718-7": {"male": Range(13.2, 16.6, ("g/dL",)), "female": Range(11.6, 15.0, ("g/dL",)),
              None: Range(11.6, 16.6, ("g/dL",))},        # Hemoglobin
    "2160-0": {"male": Range(0.7, 1.3, _MG_DL), "female": Range(0.6, 1.1, _MG_DL),
               None: Range(0.6, 1.3, _MG_DL)},            # Creatinine, serum/plasma
    "38483-4": {"male": Range(0.7, 1.3, _MG_DL), "female": Range(0.6, 1.1, _MG_DL),
                None: Range(0.6, 1.3, _MG_DL)},           # Creatinine, blood
    "2947-0": Range(135, 145, _MMOL_L),                   # Sodium, blood
    "2951-2": Range(135, 145, _MMOL_L),                   # Sodium, serum/plasma
    "6298-4": Range(3.7, 5.2, _MMOL_L),                   # Potassium, blood
    "2823-3": Range(3.7, 5.2, _MMOL_L),                   # Potassium, serum/plasma
    "2069-3": Range(96, 106, _MMOL_L),                    # Chloride, blood
    "2075-0": Range(96, 106, _MMOL_L),                    # Chloride, serum/plasma
    "20565-8": Range(23, 29, _MMOL_L),                    # Carbon dioxide, blood
    "2028-9": Range(23, 29, _MMOL_L),                     # Carbon dioxide, serum/plasma
    "6299-2": Range(6, 20, _MG_DL),                       # Urea nitrogen, blood
    "3094-0": Range(6, 20, _MG_DL),                       # Urea nitrogen, serum/plasma
    "49765-1": Range(8.5, 10.2, _MG_DL),                  # Calcium, blood
    "17861-6": Range(8.5, 10.2, _MG_DL),                  # Calcium, serum/plasma
    "6690-2": Range(4.5, 11.0, ("10*3/uL",)),             # Leukocytes
    "777-3": Range(150, 450, ("10*3/uL",)),               # Platelets
    "8310-5": Range(35.0, 38.0, ("Cel",), below=True),    # Body temperature
    "8331-1": Range(35.0, 38.0, ("Cel",), below=True),    # Oral temperature
    "8867-4": Range(60, 100, ("/min", "{beats}/min")),    # Heart rate
    "9279-1": Range(12, 20, ("/min", "{breaths}/min")),   # Respiratory rate
    "2708-6": Range(95, None, ("%",)),                    # Oxygen saturation, arterial
    "59408-5": Range(95, None, ("%",)),                   # Oxygen saturation, pulse oximetry
}
_BLOOD_PRESSURE = {"85354-9", "55284-4", "35094-2"}


def build_summary(resources: Iterable[dict], language: str = "en") -> dict:
    """Sections of one patient's clinical summary, titles in `language` ("en" or "ar")."""
    language = language if language in ("en", "ar") else "en"
    ctx = _Context([r for r in resources if isinstance(r, dict) and isinstance(r.get("resourceType"), str)], language)
    observations = {id(o): ctx.observation(o) for o in ctx.of("Observation")}
    return {
        "language": language,
        "titles": {key: TITLES[key][language] for key in SECTIONS},
        "conditions": ctx.conditions(),
        "allergies": ctx.allergies(),
        "medications": ctx.medications(),
        "results": _results([o for o in observations.values() if o]),
        "reports": ctx.reports(observations),
        "immunizations": ctx.immunizations(),
        "care_team": ctx.care_team(),
        "coverage": ctx.coverage(),
        "encounters": ctx.encounters(),
    }


class _Context:
    def __init__(self, resources: list[dict], language: str) -> None:
        self.resources = resources
        self.language = language
        self.index: dict[str, dict] = {}
        for res in resources:
            rid = res.get("id")
            if isinstance(rid, str) and rid:
                self.index[f"{res['resourceType']}/{rid}"] = res
                self.index.setdefault(f"urn:uuid:{rid}", res)
        patient = next(iter(self.of("Patient")), {})
        self.sex = patient.get("gender") if patient.get("gender") in ("male", "female") else None
        self.birth_date = parse_date(patient.get("birthDate"))

    def of(self, kind: str) -> list[dict]:
        return [r for r in self.resources if r["resourceType"] == kind]

    # --- references ---------------------------------------------------------------------------

    def resolve(self, ref: Any, within: dict | None = None) -> dict | None:
        """The resource a Reference points to, among this patient's (or contained in `within`)."""
        target = ref.get("reference") if isinstance(ref, dict) else None
        if not isinstance(target, str) or not target:
            return None
        if target.startswith("#") and within is not None:
            return next((c for c in listed(within.get("contained")) if c.get("id") == target[1:]), None)
        if target in self.index:
            return self.index[target]
        parts = target.split("/")
        return self.index.get("/".join(parts[-2:])) if len(parts) >= 2 else None

    def name_of(self, ref: Any, within: dict | None = None) -> str | None:
        """How a referenced person or organisation is called: the target's name, else the display."""
        target = self.resolve(ref, within)
        if target:
            name = _resource_name(target)
            if name:
                return name
        return ref.get("display") if isinstance(ref, dict) and isinstance(ref.get("display"), str) else None

    def label(self, status: Any) -> str | None:
        labels = STATUS_LABELS.get(status) if isinstance(status, str) else None
        return labels[self.language == "ar"] if labels else (status if isinstance(status, str) else None)

    # --- sections -----------------------------------------------------------------------------

    def conditions(self) -> list[dict]:
        items = []
        for res in self.of("Condition"):
            verification = _status_code(res.get("verificationStatus"))
            if verification in ("entered-in-error", "refuted"):
                continue
            status = _status_code(res.get("clinicalStatus"))
            items.append({
                "id": res.get("id"), "text": concept_text(res.get("code")) or "—",
                "clinical_status": status, "status_label": self.label(status), "verification": verification,
                "onset": _when(res, "onset"), "abatement": _when(res, "abatement"),
                "recorded": _str(res.get("recordedDate")),
                "category": next((concept_text(c) for c in listed(res.get("category"))), None),
            })
        return sorted(items, key=lambda i: (i["clinical_status"] not in _ACTIVE, _newest(i["onset"] or i["recorded"])))

    def allergies(self) -> list[dict]:
        items = []
        for res in self.of("AllergyIntolerance"):
            if _status_code(res.get("verificationStatus")) in ("entered-in-error", "refuted"):
                continue
            status = _status_code(res.get("clinicalStatus"))
            reactions = list(listed(res.get("reaction")))
            items.append({
                "id": res.get("id"), "substance": concept_text(res.get("code"))
                or next((concept_text(r.get("substance")) for r in reactions if r.get("substance")), None) or "—",
                "clinical_status": status, "status_label": self.label(status),
                "criticality": res.get("criticality"), "criticality_label": self.label(res.get("criticality")),
                "category": [c for c in res.get("category") or [] if isinstance(c, str)],
                "reactions": [t for r in reactions for m in listed(r.get("manifestation")) if (t := concept_text(m))],
                "severity": next((r.get("severity") for r in reactions if r.get("severity")), None),
                "onset": _when(res, "onset"), "recorded": _str(res.get("recordedDate")),
            })
        return sorted(items, key=lambda i: (i["clinical_status"] not in _ACTIVE, _newest(i["recorded"] or i["onset"])))

    def medications(self) -> list[dict]:
        items = []
        for res in self.of("MedicationRequest") + self.of("MedicationStatement"):
            if res.get("status") in _SKIPPED:
                continue
            request = res["resourceType"] == "MedicationRequest"
            dosages = list(listed(res.get("dosageInstruction" if request else "dosage")))
            authored = (_str(res.get("authoredOn")) if request
                        else _when(res, "effective") or _str(res.get("dateAsserted")))
            items.append({
                "id": res.get("id"), "name": self._medication_name(res) or "—",
                "status": res.get("status"), "status_label": self.label(res.get("status")),
                "authored_on": authored, "dosage": "; ".join(d for d in map(_dosage_text, dosages) if d) or None,
                "prescriber": self.name_of(res.get("requester")) if request else None,
            })
        current = ("active", "on-hold", "draft")
        return sorted(items, key=lambda i: (i["status"] not in current, _newest(i["authored_on"])))

    def _medication_name(self, res: dict) -> str | None:
        name = concept_text(res.get("medicationCodeableConcept"))
        if name:
            return name
        ref = res.get("medicationReference")
        medication = self.resolve(ref, res)
        return (concept_text(medication.get("code")) if medication else None) or (
            ref.get("display") if isinstance(ref, dict) else None)

    def observation(self, res: dict) -> dict | None:
        if res.get("status") in _SKIPPED:
            return None
        code = _main_code(res.get("code"))
        when = _when(res, "effective") or _str(res.get("issued"))
        adult = self._adult_at(when)
        value, quantity, unit = _value(res)
        components = []
        for comp in listed(res.get("component")):
            c_value, c_quantity, c_unit = _value(comp)
            c_code = _main_code(comp.get("code"))
            flag, source, ref_range = self._flag(comp, c_code, c_quantity, c_unit, adult)
            components.append({"code": c_code, "name": concept_text(comp.get("code")), "value": c_value,
                               "quantity": c_quantity, "unit": c_unit, "reference_range": ref_range,
                               "flag": flag, "flag_label": self._flag_label(flag), "abnormal": _abnormal(flag),
                               "flag_source": source})
        flag, source, ref_range = self._flag(res, code, quantity, unit, adult)
        if flag is None and components:
            # A panel (blood pressure) is as abnormal as its worst component.
            flagged = [c for c in components if c["flag"]]
            worst = next((c for c in flagged if c["abnormal"]), flagged[0] if flagged else None)
            if worst:
                flag, source = worst["flag"], worst["flag_source"]
        if value is None and components:
            value = _components_text(code, components)
        return {
            "id": res.get("id"), "code": code, "name": concept_text(res.get("code")) or "—",
            "category": next((c for cat in listed(res.get("category")) for _, c in codes(cat)), None),
            "date": when, "value": value, "quantity": quantity, "unit": unit, "components": components,
            "reference_range": ref_range, "flag": flag, "flag_label": self._flag_label(flag),
            "abnormal": _abnormal(flag),
            "flag_source": source, "latest": False,
        }

    def _flag_label(self, flag: str | None) -> str | None:
        labels = FLAG_LABELS.get(flag) if flag else None
        return labels[self.language == "ar"] if labels else flag

    def _adult_at(self, when: str | None) -> bool:
        """Whether the patient was 18 or older then (unknown birth date: assumed adult)."""
        at = parse_datetime(when)
        if self.birth_date is None or at is None:
            return True
        born = self.birth_date
        return (at.date().year - born.year - ((at.month, at.day) < (born.month, born.day))) >= 18

    def _flag(self, element: dict, code: str | None, quantity: float | None, unit: str | None,
              adult: bool) -> tuple[str | None, str | None, str | None]:
        """(flag, where it came from, reference range text) of an Observation or a component."""
        flag = _interpretation(element.get("interpretation"))
        range_text = None
        for ref_range in listed(element.get("referenceRange")):
            meaning = _status_code(ref_range.get("type"))
            if meaning not in (None, "normal", "recommended"):
                continue
            low, high = _number(ref_range.get("low")), _number(ref_range.get("high"))
            range_text = ref_range.get("text") if isinstance(ref_range.get("text"), str) else _range_text(
                low, high, False, _unit_of(ref_range.get("low") or ref_range.get("high")) or unit)
            if flag is None and quantity is not None and (low is not None or high is not None):
                return _compare(quantity, low, high, False), "reference_range", range_text
            break
        if flag:
            return flag, "interpretation", range_text
        table = _ADULT_RANGES.get(code or "")
        if isinstance(table, dict):
            table = table.get(self.sex) or table.get(None)
        if table and quantity is not None and adult and unit in table.units:
            text = _range_text(table.low, table.high, table.below, unit)
            return _compare(quantity, table.low, table.high, table.below), "table", range_text or text
        return None, None, range_text

    def reports(self, observations: dict[int, dict | None]) -> list[dict]:
        items = []
        for res in self.of("DiagnosticReport"):
            if res.get("status") in _SKIPPED:
                continue
            results = []
            for ref in listed(res.get("result")):
                target = self.resolve(ref, res)
                item = observations.get(id(target)) if target is not None else None
                if item is None and target is not None and target.get("resourceType") == "Observation":
                    item = self.observation(target)
                results.append(item or {"name": ref.get("display") or "—", "value": None, "flag": None,
                                        "abnormal": None})
            items.append({
                "id": res.get("id"), "name": concept_text(res.get("code")) or "—",
                "status": res.get("status"), "status_label": self.label(res.get("status")),
                "category": next((concept_text(c) for c in listed(res.get("category"))), None),
                "date": _when(res, "effective") or _str(res.get("issued")),
                "conclusion": res.get("conclusion") if isinstance(res.get("conclusion"), str) else None,
                "results": results, "abnormal": any(r.get("abnormal") for r in results),
            })
        return sorted(items, key=lambda i: _newest(i["date"]))

    def immunizations(self) -> list[dict]:
        items = [{"id": res.get("id"), "name": concept_text(res.get("vaccineCode")) or "—",
                  "date": _when(res, "occurrence") or _str(res.get("recorded")),
                  "status": res.get("status"), "status_label": self.label(res.get("status"))}
                 for res in self.of("Immunization") if res.get("status") not in _SKIPPED]
        return sorted(items, key=lambda i: _newest(i["date"]))

    def care_team(self) -> list[dict]:
        members: dict[str, dict] = {}
        for team in self.of("CareTeam"):
            if team.get("status") in ("entered-in-error", "inactive"):
                continue
            for part in listed(team.get("participant")):
                name = self.name_of(part.get("member"), team)
                if not name:
                    continue
                member = part.get("member") if isinstance(part.get("member"), dict) else {}
                key = member.get("reference") or name
                members.setdefault(key, {
                    "name": name, "role": next((concept_text(r) for r in listed(part.get("role"))), None),
                    "team": team.get("name") if isinstance(team.get("name"), str) else None,
                    "organization": self.name_of(part.get("onBehalfOf")), "source": "CareTeam", "last_seen": None,
                })
        seen: dict[str, dict] = {}
        for encounter in self.of("Encounter"):
            when = _period_start(encounter.get("period"))
            for part in listed(encounter.get("participant")):
                person = part.get("individual")
                name = self.name_of(person)
                if not name:
                    continue
                key = (person.get("reference") if isinstance(person, dict) else None) or name
                if key in members:
                    continue
                entry = seen.setdefault(key, {
                    "name": name, "role": next((concept_text(t) for t in listed(part.get("type"))), None),
                    "team": None, "organization": self.name_of(encounter.get("serviceProvider")),
                    "source": "Encounter", "last_seen": None, "encounters": 0})
                entry["encounters"] += 1
                if _sort_key(when) > _sort_key(entry["last_seen"]):
                    entry["last_seen"] = when
        return list(members.values()) + sorted(seen.values(), key=lambda m: _newest(m["last_seen"]))

    def coverage(self) -> list[dict]:
        items = []
        for res in self.of("Coverage"):
            if res.get("status") in _SKIPPED:
                continue
            payers = [n for n in (self.name_of(p, res) for p in listed(res.get("payor"))) if n]
            period = res.get("period") if isinstance(res.get("period"), dict) else {}
            items.append({"payer": ", ".join(payers) or concept_text(res.get("type")) or "—",
                          "type": concept_text(res.get("type")), "status": res.get("status"),
                          "status_label": self.label(res.get("status")), "subscriber_id": res.get("subscriberId"),
                          "start": _str(period.get("start")), "end": _str(period.get("end")),
                          "source": "Coverage"})
        if items:
            return sorted(items, key=lambda i: (i["status"] != "active", _newest(i["start"])))
        return self._payers_from_claims()

    def _payers_from_claims(self) -> list[dict]:
        """Synthea writes no Coverage: the insurer of each claim and explanation of benefit tells who paid."""
        payers: dict[str, dict] = {}
        for res in self.of("ExplanationOfBenefit") + self.of("Claim"):
            names = []
            if res["resourceType"] == "ExplanationOfBenefit":
                names.append(self.name_of(res.get("insurer"), res))
            for insurance in listed(res.get("insurance")):
                coverage = self.resolve(insurance.get("coverage"), res)
                if coverage:
                    names.extend(self.name_of(p, res) for p in listed(coverage.get("payor")))
                names.append(self.name_of(insurance.get("coverage"), res))
            if res["resourceType"] == "Claim":
                names.append(self.name_of(res.get("insurer"), res))
            name = next((n for n in names if n), None)
            if not name:
                continue
            when = _period_start(res.get("billablePeriod")) or _str(res.get("created"))
            entry = payers.setdefault(name.lower(), {"payer": name, "type": None, "status": None, "status_label": None,
                                                     "subscriber_id": None, "start": when, "end": when,
                                                     "source": res["resourceType"], "claims": 0})
            entry["claims"] += 1
            if _sort_key(when) < _sort_key(entry["start"], missing_first=False):
                entry["start"] = when
            if _sort_key(when) > _sort_key(entry["end"]):
                entry["end"] = when
        return sorted(payers.values(), key=lambda p: _newest(p["end"]))

    def encounters(self) -> list[dict]:
        items = []
        for res in self.of("Encounter"):
            if res.get("status") in _SKIPPED:
                continue
            period = res.get("period") if isinstance(res.get("period"), dict) else {}
            klass = res.get("class") if isinstance(res.get("class"), dict) else {}
            practitioners = [n for p in listed(res.get("participant")) if (n := self.name_of(p.get("individual")))]
            items.append({
                "id": res.get("id"),
                "type": next((concept_text(t) for t in listed(res.get("type"))), None) or klass.get("display")
                or klass.get("code") or "—",
                "class": klass.get("code"), "status": res.get("status"), "status_label": self.label(res.get("status")),
                "start": _str(period.get("start")), "end": _str(period.get("end")),
                "provider": self.name_of(res.get("serviceProvider")),
                "practitioners": list(dict.fromkeys(practitioners)),
                "reason": [t for t in (concept_text(c) for c in listed(res.get("reasonCode"))) if t],
            })
        return sorted(items, key=lambda i: _newest(i["start"]))


# --- results ----------------------------------------------------------------------------------

def _results(items: list[dict]) -> list[dict]:
    """Newest first, the latest value of each test before the earlier values."""
    ordered = sorted(items, key=lambda i: _newest(i["date"]))
    latest, earlier, seen = [], [], set()
    for item in ordered:
        key = item["code"] or item["name"]
        if key in seen:
            earlier.append(item)
        else:
            seen.add(key)
            latest.append({**item, "latest": True})
    return latest + earlier


def _value(element: dict) -> tuple[str | None, float | None, str | None]:
    """(display text, number, UCUM unit) of an Observation's or component's value[x]."""
    quantity = element.get("valueQuantity")
    if isinstance(quantity, dict) and _number(quantity) is not None:
        number, unit = _number(quantity), _unit_of(quantity)
        return _with_unit(_fmt(number), unit), number, unit
    if isinstance(element.get("valueCodeableConcept"), dict):
        return concept_text(element["valueCodeableConcept"]), None, None
    for key in ("valueString", "valueDateTime", "valueTime"):
        if isinstance(element.get(key), str):
            return element[key], None, None
    if isinstance(element.get("valueBoolean"), bool):
        return ("Yes" if element["valueBoolean"] else "No"), None, None
    if isinstance(element.get("valueInteger"), int):
        return str(element["valueInteger"]), float(element["valueInteger"]), None
    value_range = element.get("valueRange")
    if isinstance(value_range, dict):
        low, high = _number(value_range.get("low")), _number(value_range.get("high"))
        return _range_text(low, high, False, _unit_of(value_range.get("low") or value_range.get("high"))), None, None
    ratio = element.get("valueRatio")
    if isinstance(ratio, dict) and _number(ratio.get("numerator")) is not None and _number(ratio.get("denominator")):
        return f"{_fmt(_number(ratio['numerator']))}/{_fmt(_number(ratio['denominator']))}", None, None
    if isinstance(element.get("valuePeriod"), dict):
        return _period_start(element["valuePeriod"]), None, None
    absent = concept_text(element.get("dataAbsentReason"))
    return (f"({absent})" if absent else None), None, None


def _components_text(code: str | None, components: list[dict]) -> str | None:
    by_code = {c["code"]: c for c in components}
    systolic, diastolic = by_code.get("8480-6"), by_code.get("8462-4")
    if code in _BLOOD_PRESSURE and systolic and diastolic and systolic["quantity"] is not None \
            and diastolic["quantity"] is not None:
        return _with_unit(f"{_fmt(systolic['quantity'], 0)}/{_fmt(diastolic['quantity'], 0)}", systolic["unit"])
    parts = [f"{c['name']}: {c['value']}" for c in components if c["value"]]
    return "; ".join(parts) or None


def _interpretation(concepts: Any) -> str | None:
    for concept in listed(concepts):
        for system, code in codes(concept):
            if system in (_OBSERVATION_INTERPRETATION, None) or code in _NORMAL | _ABNORMAL:
                return code
        text = (concept_text(concept) or "").strip().lower()
        if text in _INTERPRETATION_WORDS:
            return _INTERPRETATION_WORDS[text]
    return None


def _abnormal(flag: str | None) -> bool | None:
    if flag in _ABNORMAL:
        return True
    if flag in _NORMAL:
        return False
    return None


def _compare(value: float, low: float | None, high: float | None, below: bool) -> str:
    if low is not None and value < low:
        return "L"
    if high is not None and (value >= high if below else value > high):
        return "H"
    return "N"


def _range_text(low: float | None, high: float | None, below: bool, unit: str | None) -> str | None:
    if low is not None and high is not None:
        text = f"{_fmt(low)}–{_fmt(high)}" if not below else f"{_fmt(low)} to < {_fmt(high)}"
    elif high is not None:
        text = f"< {_fmt(high)}" if below else f"≤ {_fmt(high)}"
    elif low is not None:
        text = f"≥ {_fmt(low)}"
    else:
        return None
    return _with_unit(text, unit)


def _with_unit(text: str, unit: str | None) -> str:
    shown = _UNITS.get(unit, unit) if unit else ""
    return f"{text} {shown}" if shown else text


def _fmt(number: float | None, places: int | None = None) -> str:
    if number is None:
        return "—"
    if places is None:
        places = 2 if abs(number) < 1 else 1
    text = f"{number:.{places}f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def _number(quantity: Any) -> float | None:
    value = quantity.get("value") if isinstance(quantity, dict) else None
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        return None
    try:
        return float(value)
    except ValueError:
        return None


def _unit_of(quantity: Any) -> str | None:
    if not isinstance(quantity, dict):
        return None
    unit = quantity.get("code") or quantity.get("unit")
    return str(unit) if unit else None


def _main_code(concept: Any) -> str | None:
    """The LOINC code of a concept if it has one, else its first code."""
    found = codes(concept)
    return next((c for s, c in found if s == LOINC), found[0][1] if found else None)


# --- small readers ----------------------------------------------------------------------------

def _status_code(concept: Any) -> str | None:
    found = codes(concept)
    return found[0][1] if found else (concept_text(concept) or None)


def _str(value: Any) -> str | None:
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    return value if isinstance(value, str) and value else None


def _when(res: dict, prefix: str) -> str | None:
    """The date of a choice element: <prefix>DateTime, <prefix>Instant, <prefix>Period.start, <prefix>String."""
    for suffix in ("DateTime", "Instant", "Date"):
        if _str(res.get(prefix + suffix)):
            return _str(res.get(prefix + suffix))
    if isinstance(res.get(prefix + "Period"), dict):
        return _period_start(res[prefix + "Period"])
    return _str(res.get(prefix + "String"))


def _period_start(period: Any) -> str | None:
    if not isinstance(period, dict):
        return None
    return _str(period.get("start")) or _str(period.get("end"))


_EPOCH = datetime(1, 1, 1, tzinfo=timezone.utc)
_END = datetime(9999, 12, 31, tzinfo=timezone.utc)


def _sort_key(when: str | None, missing_first: bool = True) -> datetime:
    """A comparable time for a FHIR date of any precision ("2019", "2019-05", full instants)."""
    if isinstance(when, str) and len(when) in (4, 7):
        when = when + ("-01-01" if len(when) == 4 else "-01")
    parsed = parse_datetime(when)
    return parsed if parsed else (_EPOCH if missing_first else _END)


def _newest(when: str | None) -> float:
    """Sort key putting the newest first and undated items last."""
    return -_sort_key(when).timestamp()


def _dosage_text(dosage: dict) -> str | None:
    if isinstance(dosage.get("text"), str) and dosage["text"].strip():
        return dosage["text"].strip()
    parts = []
    for rate in listed(dosage.get("doseAndRate")):
        dose = rate.get("doseQuantity")
        if _number(dose) is not None:
            parts.append(_with_unit(_fmt(_number(dose)), dose.get("unit") or dose.get("code")))
            break
    timing = dosage.get("timing") if isinstance(dosage.get("timing"), dict) else {}
    repeat = timing.get("repeat") if isinstance(timing.get("repeat"), dict) else {}
    if repeat.get("frequency") and repeat.get("period") and repeat.get("periodUnit"):
        units = {"h": "hour", "d": "day", "wk": "week", "mo": "month", "min": "minute", "a": "year"}
        unit = units.get(repeat["periodUnit"], repeat["periodUnit"])
        period = _fmt(float(repeat["period"]))
        parts.append(f"{repeat['frequency']} time(s) every {period + ' ' if period != '1' else ''}{unit}")
    elif concept_text(timing.get("code")):
        parts.append(concept_text(timing.get("code")))
    route = concept_text(dosage.get("route"))
    if route:
        parts.append(route)
    if dosage.get("asNeededBoolean") is True or dosage.get("asNeededCodeableConcept"):
        reason = concept_text(dosage.get("asNeededCodeableConcept"))
        parts.append(f"as needed for {reason}" if reason else "as needed")
    return ", ".join(parts) or None


def _resource_name(res: dict) -> str | None:
    name = res.get("name")
    if isinstance(name, str):
        return name
    for human in listed(name):
        if isinstance(human.get("text"), str) and human["text"].strip():
            return human["text"].strip()
        parts = [*(human.get("prefix") or []), *(human.get("given") or []), human.get("family")]
        text = " ".join(p for p in parts if isinstance(p, str) and p)
        if text:
            return text
    return None
