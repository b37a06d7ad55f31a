"""The store persists: queries and writes over the incident record; every function
takes `session=`. It decides nothing: intake's decisions are `bot.domain.intake`'s.

* `intake`: what a group commit of alerts needs loaded, and its plan written back.
* `incidents`: writes to one incident (timeline, owed deliveries, resolve, promote, runs).
* `outbox`: which deliveries are due, their leases, and their outcomes.
* `reads`: read queries for Slack, the CLI and reports.
* `pulses`: satisfaction pulses and their answers.
"""

from bot.domain.incident import DeliveryPolicy
from bot.store.incidents import (
    OPEN_STATES,
    add_timeline,
    owe,
    promote,
    request_run,
    resolve,
    side_page,
    side_pages,
)
from bot.store.intake import IngestResult, active_silences, apply_alerts
from bot.store.outbox import (
    TARGETS,
    OutboxStats,
    Outcome,
    announce_pages,
    due_deliveries,
    lease_deliveries,
    outbox_stats,
    pages_owed_since,
    pending_pages,
    record_outcomes,
    release_leases,
)
from bot.store.pulses import (
    answer_of,
    open_pulse,
    open_pulse_by_id,
    pulse_facts,
    save_comment,
    save_score,
)
from bot.store.reads import (
    AlertSummary,
    earlier_post_attempt,
    incident_for_message,
    open_incident_counts,
    timeline,
)

__all__ = [
    "OPEN_STATES", "TARGETS", "answer_of", "open_pulse", "open_pulse_by_id", "pulse_facts",
    "save_comment", "save_score", "AlertSummary", "DeliveryPolicy", "IngestResult", "Outcome",
    "OutboxStats", "active_silences", "add_timeline", "announce_pages", "apply_alerts",
    "due_deliveries", "earlier_post_attempt", "open_incident_counts", "incident_for_message",
    "lease_deliveries", "outbox_stats", "owe", "pages_owed_since", "pending_pages",
    "promote", "record_outcomes", "release_leases", "request_run", "resolve",
    "side_page", "side_pages", "timeline",
]
