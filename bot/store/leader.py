"""Which process runs the timers: on PostgreSQL the holder of a session advisory lock,
held on a connection of its own (so it is freed when the holder dies and another
replica takes over); on SQLite the single bot process."""

from __future__ import annotations

import logging
import threading

from sqlalchemy import Connection, Engine, text

from bot.db import Database

log = logging.getLogger(__name__)

# Whether this session holds the leader lock: a one-bigint-key advisory lock shows in
# pg_locks as classid (high 32 bits), objid (low 32 bits) and objsubid 1.
_HOLDS_LOCK = text("SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' "
                   "AND pid = pg_backend_pid() AND granted AND classid = 0 "
                   "AND objid::bigint = :k AND objsubid = 1)")


class LeaderLock:
    def __init__(self, db: Database, *, key: int, application_name: str) -> None:
        """`application_name` names the lock connection in pg_stat_activity."""
        self.db = db
        self.key = key
        self.application_name = application_name
        self._engine: Engine | None = None
        self._connection: Connection | None = None
        # The lock connection is used from the round's thread and from firing timers.
        self._guard = threading.Lock()

    def try_lead(self) -> bool:
        """Whether this process may run the scheduler this round. A leader proves each
        round that its lock connection still holds the lock; one that cannot (the
        connection died, the server restarted) answers False, and so stops scheduling,
        and only tries to take the lock again the round after."""
        if self.db.is_sqlite:
            return True
        with self._guard:
            if self._connection is not None:
                if self._holds_lock():
                    return True
                log.warning("lost the timer leader lock (its connection is gone); "
                            "this process stops running the timers")
                self._release_connection()
                return False
            if self._engine is None:
                self._engine = self.db.lock_engine(self.application_name)
            connection = self._engine.connect()
            try:
                taken = connection.execute(text("SELECT pg_try_advisory_lock(:k)"),
                                           {"k": self.key}).scalar()
            except Exception:
                connection.close()
                raise
            if taken:
                self._connection = connection
                return True
            connection.close()
            return False

    def still_leading(self) -> bool:
        """Checked before a timer acts: a job APScheduler fires between two rounds must
        not act once the lock is lost (another replica may lead already)."""
        if self.db.is_sqlite:
            return True
        with self._guard:
            return self._connection is not None and self._holds_lock()

    def release(self) -> None:
        with self._guard:
            self._release_connection()
        if self._engine is not None:
            self._engine.dispose()

    def _holds_lock(self) -> bool:
        """Ask the server, on the lock connection itself, whether it still holds the
        lock; any error means it cannot tell, which counts as no. Caller holds _guard."""
        assert self._connection is not None
        try:
            return bool(self._connection.execute(_HOLDS_LOCK, {"k": self.key}).scalar())
        except Exception:
            return False

    def _release_connection(self) -> None:
        if self._connection is not None:
            try:
                self._connection.close()
            except Exception:  # already dead: nothing to release
                pass
            self._connection = None
