"""The patient portal at /portal: sign-in with a one-time code and the date of birth, appointments,
results and the rest of the clinical summary, messages with the care team, preferences and
consent, and a download of everything Sila holds about the patient (see docs/DESIGN.md)."""
