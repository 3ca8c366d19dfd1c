"""The clinical summary of a patient, from the resources of the Synthea fixtures and from odd ones."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from ehr.summary import SECTIONS, build_summary

FIXTURES = Path("/work/shared/fixtures/fhir")


def resources_of(stem: str) -> list[dict]:
    bundle = json.loads(next(FIXTURES.glob(f"{stem}_*.json")).read_text(encoding="utf-8"))
    return [entry["resource"] for entry in bundle["entry"]]


@pytest.fixture(scope="module")
def gayla() -> dict:
    return build_summary(resources_of("Gayla_Ferry"))


def latest(summary: dict, code: str) -> dict:
    return next(r for r in summary["results"] if r["code"] == code and r["latest"])


@pytest.mark.parametrize("stem", ["Gayla_Ferry", "Royal_DuBuque", "Yi_Weissnat"])
def test_every_fixture_bundle_gives_every_section(stem):
    summary = build_summary(resources_of(stem))
    assert set(SECTIONS) <= set(summary) and set(summary["titles"]) == set(SECTIONS)
    for key in ("conditions", "medications", "results", "reports", "immunizations", "encounters", "coverage",
                "care_team"):
        assert summary[key], key
    json.dumps(summary)  # stored in the patient profile as JSON


def test_conditions_list_the_patients_diagnoses_active_first(gayla):
    texts = [c["text"] for c in gayla["conditions"]]
    assert {"Hypertension", "Coronary Heart Disease", "Osteoporosis (disorder)"} <= set(texts)
    hypertension = next(c for c in gayla["conditions"] if c["text"] == "Hypertension")
    assert hypertension["clinical_status"] == "active" and hypertension["onset"].startswith("1956-01-19")
    royal = build_summary(resources_of("Royal_DuBuque"))["conditions"]
    assert royal[-1]["text"] == "Acute bronchitis (disorder)" and royal[-1]["clinical_status"] == "resolved"
    assert royal[-1]["abatement"].startswith("2014-06-15")


def test_an_out_of_range_blood_pressure_is_flagged_high(gayla):
    bp = latest(gayla, "55284-4")
    assert bp["value"] == "146/115 mmHg" and bp["date"].startswith("2020-08-20")
    assert bp["flag"] == "H" and bp["abnormal"] is True and bp["flag_source"] == "table"
    systolic = next(c for c in bp["components"] if c["code"] == "8480-6")
    assert systolic["flag"] == "H" and systolic["reference_range"] == "90 to < 130 mmHg"


def test_normal_values_are_not_flagged(gayla):
    cholesterol = latest(gayla, "2093-3")
    assert cholesterol["value"] == "186.1 mg/dL" and cholesterol["flag"] == "N" and cholesterol["abnormal"] is False


def test_results_are_newest_first_with_the_latest_value_of_each_test_first(gayla):
    results = gayla["results"]
    firsts = [r for r in results if r["latest"]]
    assert results[:len(firsts)] == firsts
    assert len({r["code"] for r in firsts}) == len(firsts)
    bmi = [r for r in results if r["code"] == "39156-5"]
    assert bmi[0]["latest"] and bmi[0]["date"].startswith("2020-08-20") and len(bmi) == 10
    dates = [r["date"] for r in bmi]
    assert dates == sorted(dates, reverse=True)


def test_haemoglobin_range_depends_on_sex():
    royal = build_summary(resources_of("Royal_DuBuque"))
    hb = latest(royal, "718-7")  # 12.1 g/dL: low for a man, normal for a woman
    assert hb["flag"] == "L" and hb["abnormal"] is True
    gayla_hb = latest(build_summary(resources_of("Gayla_Ferry")), "718-7")
    assert gayla_hb["flag"] == "N"


def test_adult_ranges_are_not_applied_to_children():
    yi = build_summary(resources_of("Yi_Weissnat"))  # born 2002-12-22: 17 at her last visit
    bp = latest(yi, "55284-4")
    assert bp["value"] == "135/76 mmHg" and bp["flag"] is None and bp["abnormal"] is None


def test_reports_carry_their_result_values(gayla):
    lipid = next(r for r in gayla["reports"] if r["name"] == "Lipid Panel")
    assert lipid["date"].startswith("2019-08-15")
    assert [r["name"] for r in lipid["results"]] == ["Total Cholesterol", "Triglycerides",
                                                     "Low Density Lipoprotein Cholesterol",
                                                     "High Density Lipoprotein Cholesterol"]
    assert all(r["value"] and r["value"].endswith("mg/dL") for r in lipid["results"])


def test_medications_immunizations_care_team_coverage_and_encounters(gayla):
    meds = {m["name"]: m for m in gayla["medications"]}
    assert meds["Simvastatin 20 MG Oral Tablet"]["status"] == "active"
    assert meds["Simvastatin 20 MG Oral Tablet"]["prescriber"] == "Dr. Keeley Yundt"
    assert gayla["immunizations"][0]["date"].startswith("2020-08-20")
    assert gayla["care_team"][0]["name"] == "Dr. Keeley Yundt"
    assert gayla["care_team"][0]["organization"] == "HOLYOKE MEDICAL CENTER"
    # Synthea writes no Coverage: the payers come from the claims, the current one first.
    assert [c["payer"] for c in gayla["coverage"]] == ["medicare", "private"]
    visit = gayla["encounters"][0]
    assert visit["start"].startswith("2020-08-20") and visit["provider"] == "HOLYOKE MEDICAL CENTER"
    assert visit["practitioners"] == ["Dr. Keeley Yundt"]
    yi = build_summary(resources_of("Yi_Weissnat"))
    assert yi["medications"][-1]["dosage"] == "as needed"  # Ibuprofen, asNeededBoolean only


def test_titles_in_arabic():
    summary = build_summary(resources_of("Royal_DuBuque"), language="ar")
    assert summary["titles"]["conditions"] == "الحالات المرضية"
    assert summary["titles"]["medications"] == "الأدوية"
    assert latest(summary, "718-7")["flag_label"] == "منخفض"


PATIENT = {"resourceType": "Patient", "id": "p1", "gender": "female", "birthDate": "1970-01-01"}


def obs(code: str, value: float, unit: str, **extra) -> dict:
    return {"resourceType": "Observation", "id": code, "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": code}], "text": code},
            "effectiveDateTime": "2024-05-01T08:00:00Z",
            "valueQuantity": {"value": value, "unit": unit, "system": "http://unitsofmeasure.org", "code": unit},
            **extra}


def test_interpretation_wins_over_ranges_and_the_resources_range_over_the_table():
    interpreted = obs("2093-3", 250, "mg/dL", interpretation=[{"coding": [
        {"system": "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation", "code": "N"}]}])
    ranged = obs("2571-8", 160, "mg/dL", referenceRange=[{"low": {"value": 0, "unit": "mg/dL"},
                                                           "high": {"value": 170, "unit": "mg/dL"}}])
    local = obs("1234-5", 9, "mmol/L", referenceRange=[{"high": {"value": 5}, "text": "under 5"}])
    texted = obs("2345-7", 150, "mg/dL", interpretation=[{"text": "High"}])
    results = {r["code"]: r for r in build_summary([PATIENT, interpreted, ranged, local, texted])["results"]}
    assert (results["2093-3"]["flag"], results["2093-3"]["flag_source"]) == ("N", "interpretation")
    assert (results["2571-8"]["flag"], results["2571-8"]["flag_source"]) == ("N", "reference_range")
    assert results["1234-5"]["flag"] == "H" and results["1234-5"]["reference_range"] == "under 5"
    assert results["2345-7"]["flag"] == "H" and results["2345-7"]["abnormal"] is True


def test_table_ranges_need_the_same_unit():
    mmol = obs("2345-7", 5.2, "mmol/L")  # glucose in SI units: the mg/dL range does not apply
    assert build_summary([PATIENT, mmol])["results"][0]["flag"] is None


def test_references_by_type_and_id_contained_coverage_careteam_and_allergies():
    resources = [
        PATIENT,
        {"resourceType": "Organization", "id": "o1", "name": "Bupa Arabia"},
        {"resourceType": "Practitioner", "id": "d1", "name": [{"text": "Dr. Huda Al-Qahtani"}]},
        obs("4548-4", 7.1, "%"),
        {"resourceType": "DiagnosticReport", "id": "r1", "status": "final", "code": {"text": "Diabetes check"},
         "effectiveDateTime": "2024-05-01", "result": [{"reference": "Observation/4548-4"},
                                                       {"reference": "Observation/missing", "display": "Glucose"}]},
        {"resourceType": "Coverage", "id": "c1", "status": "active", "payor": [{"reference": "Organization/o1"}],
         "period": {"start": "2024-01-01"}},
        {"resourceType": "CareTeam", "id": "t1", "status": "active", "name": "Diabetes team",
         "participant": [{"role": [{"text": "Endocrinologist"}], "member": {"reference": "Practitioner/d1"}}]},
        {"resourceType": "AllergyIntolerance", "id": "a1", "criticality": "high",
         "clinicalStatus": {"coding": [{"code": "active"}]}, "code": {"text": "Penicillin"},
         "reaction": [{"manifestation": [{"text": "Hives"}], "severity": "moderate"}]},
        {"resourceType": "AllergyIntolerance", "id": "a2", "code": {"text": "Peanut"},
         "verificationStatus": {"coding": [{"code": "entered-in-error"}]}},
    ]
    summary = build_summary(resources)
    report = summary["reports"][0]
    assert report["results"][0]["value"] == "7.1 %" and report["results"][0]["flag"] == "H"
    assert report["results"][1] == {"name": "Glucose", "value": None, "flag": None, "abnormal": None}
    assert report["abnormal"] is True
    assert summary["coverage"][0]["payer"] == "Bupa Arabia" and summary["coverage"][0]["source"] == "Coverage"
    assert summary["care_team"][0]["name"] == "Dr. Huda Al-Qahtani"
    assert summary["care_team"][0]["role"] == "Endocrinologist"
    assert [a["substance"] for a in summary["allergies"]] == ["Penicillin"]
    assert summary["allergies"][0]["reactions"] == ["Hives"]


@pytest.mark.parametrize("resources", [
    [],
    ["not a resource", None, 7, {"no": "type"}],
    [{"resourceType": "Observation"}, {"resourceType": "Condition", "code": 5},
     {"resourceType": "Encounter", "period": "x", "participant": [1, {"individual": "y"}]},
     {"resourceType": "DiagnosticReport", "result": "none"}, {"resourceType": "MedicationRequest",
                                                              "dosageInstruction": [{"timing": 3}]},
     {"resourceType": "ExplanationOfBenefit", "insurer": {}}, {"resourceType": "Immunization", "status": 1},
     {"resourceType": "Observation", "valueQuantity": {"value": "abc"}, "effectiveDateTime": "2020"},
     {"resourceType": "Observation", "component": [{"code": {}}], "effectivePeriod": {"start": "2021-02"}}],
])
def test_missing_and_malformed_fields_never_break_the_summary(resources):
    summary = build_summary(resources, language="fr")
    assert summary["language"] == "en"
    json.dumps(summary)
