"""Campaigns and workflow automation: segments, templates, broadcasts, the scheduler, metrics,
automations (reminders, follow-ups, birthdays, condition drips). See docs/DESIGN.md."""
