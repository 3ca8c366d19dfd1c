"""The identifier systems of Sila's own business identifiers.

An EHR matches a resource Sila writes by these (a conditional create asks "is there already an
Appointment with identifier urn:sila:appointment|AB12CD?"), so they never change once in use."""

PATIENT = "urn:sila:patient"
APPOINTMENT = "urn:sila:appointment"
MESSAGE = "urn:sila:message"
PRACTITIONER = "urn:sila:practitioner"
DEPARTMENT = "urn:sila:department"
SLOT = "urn:sila:slot"
CONSENT = "urn:sila:consent"
SURVEY = "urn:sila:survey"
SURVEY_RESPONSE = "urn:sila:survey-response"
HOSPITAL = "urn:sila:hospital"
