"""Use cases: what the bot does, named and in one place (ingest, acknowledge, resolve, ...).

Edges (web/, slack_app/, timers) call these and never touch a session; the use cases
load through the store, let the domain decide, persist, and wake delivery.
"""
