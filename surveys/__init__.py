"""Surveys and feedback: definitions (YAML and the console), sending, answering in the conversation
on any channel, scoring (NPS, CSAT), analytics, detractor alerts, and the EHR's Questionnaire and
QuestionnaireResponse."""
