"""Which models the registry poll reads: alert labels are attacker-written, so a model
only old alerts named, or one the registry does not serve, is not polled for ever."""

from __future__ import annotations

from datetime import timedelta

from bot.clock import utcnow
from bot.db import Database
from bot.models import Incident, ModelAlias
from bot.store.changes import known_models


def test_the_poll_reads_recently_alerting_and_served_models_only(database_url: str) -> None:
    db = Database(database_url)
    db.upgrade()
    now = utcnow()
    with db.write() as session:
        for n, (model, age) in enumerate([("recent", 1), ("old-only", 40), ("served", 40)]):
            at = now - timedelta(days=age)
            session.add(Incident(key=f"k{n}", group_key=f"g{n}", group_hash=f"h{n}",
                                 title=model, state="resolved", tier="L0", route="default",
                                 source="generic", labels={"model": model}, model=model,
                                 triggered_at=at, last_alert_at=at))
        session.add(ModelAlias(model="served", alias="champion", version="7", observed_at=now))
        session.add(ModelAlias(model="unserved", alias="champion", version=None, observed_at=now))
    with db.read() as session:
        assert known_models(session=session, alerts_since=now - timedelta(days=30)) == {
            "recent", "served"}
    db.dispose()
