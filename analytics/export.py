"""The dashboard's figures as CSV, one file per section, aggregates only.

Files start with a UTF-8 byte order mark so that Excel, which most hospital offices open them with,
shows Arabic department names instead of mojibake; a text cell starting with = + - @ is prefixed
with an apostrophe so a spreadsheet never runs it as a formula (CSV injection).
"""
from __future__ import annotations

import csv
import io

SECTIONS = ("summary", "conversations", "handoff_reasons", "intents", "languages", "bookings", "no_shows",
            "campaigns", "surveys")


def _cell(value) -> object:
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    if isinstance(value, float):
        return round(value, 4)
    return "" if value is None else value


def rows(section: str, figures: dict) -> list[list]:
    period = figures["period"]
    if section == "summary":
        c, h, r, i, b, n = (figures[k] for k in ("containment", "handoffs", "first_reply", "intents", "bookings",
                                                  "no_shows"))
        return [["metric", "value"],
                ["period_first_day", period.first.isoformat()], ["period_last_day", period.last.isoformat()],
                ["active_conversations", c["conversations"]], ["contained", c["contained"]],
                ["containment_rate", c["rate"]], ["handoffs", h["events"]],
                ["handed_over_conversations", h["conversations"]], ["handoff_rate", h["rate"]],
                ["first_reply_median_seconds", r["median_seconds"]], ["first_reply_p90_seconds", r["p90_seconds"]],
                ["handoffs_unanswered", r["unanswered"]],
                [f"first_reply_within_{r['target_minutes']}_minutes", r["within_target"]],
                ["messages_read_by_bot", i["messages"]], ["misunderstood", i["misunderstood"]],
                ["misunderstood_rate", i["rate"]], ["out_of_scope", i["out_of_scope"]],
                ["booking_requests", b["requests"]], ["booked_within_24h", b["booked"]],
                ["booking_conversion", b["rate"]], ["appointments_attended_or_missed", n["outcomes"]],
                ["no_shows", n["no_shows"]], ["no_show_rate", n["rate"]]]
    if section == "conversations":
        data = figures["conversations"]
        return [["day", "channel", "conversations"]] + [
            [day.isoformat(), channel, counts[i]] for i, day in enumerate(data["days"])
            for channel, counts in data["channels"].items()]
    if section == "handoff_reasons":
        return [["reason", "handoffs"]] + [list(r) for r in figures["handoffs"]["reasons"]]
    if section == "intents":
        return [["intent", "messages"]] + [list(r) for r in figures["intents"]["top"]]
    if section == "languages":
        return [["language", "messages", "misunderstood", "out_of_scope", "misunderstood_rate"]] + [
            [lang, v["messages"], v["misunderstood"], v["out_of_scope"], v["rate"]]
            for lang, v in figures["intents"]["by_language"].items()]
    if section == "bookings":
        return [["channel", "appointments_booked"]] + [list(r) for r in figures["bookings"]["appointments_by_channel"]]
    if section == "no_shows":
        return [["department", "name_en", "name_ar", "attended_or_missed", "no_shows", "no_show_rate"]] + [
            [d["code"], d["name_en"], d["name_ar"], d["outcomes"], d["no_shows"], d["rate"]]
            for d in figures["no_shows"]["by_department"]]
    if section == "campaigns":
        keys = ["name", "status", "recipients", "skipped", "messaged", "sent", "delivered", "failed", "replied",
                "opted_out", "booked", "conversion_days"]
        return [keys] + [[c[k] for k in keys] for c in figures.get("campaigns") or []]
    if section == "surveys":
        keys = ["code", "title_en", "title_ar", "sent", "responded", "completed", "response_rate", "nps_responses",
                "promoters", "detractors", "nps", "csat_responses", "csat_average", "satisfied"]
        return [keys] + [[s[k] for k in keys] for s in figures.get("surveys") or []]
    raise KeyError(section)


def to_csv(table: list[list]) -> str:
    buffer = io.StringIO()
    buffer.write("\ufeff")
    writer = csv.writer(buffer, lineterminator="\r\n")
    for row in table:
        writer.writerow([_cell(v) for v in row])
    return buffer.getvalue()
