"""Settings a deployment relies on (issue 14): postgres:// URLs, the pool size, the log format."""

import pytest

from bot.db import Database
from bot.settings import ConfigurationError, load_settings


def test_postgres_urls_are_accepted_as_postgresql():
    settings = load_settings(database_url="postgres://oncall:pw@db.internal:5432/oncall")
    assert settings.database_url == "postgresql://oncall:pw@db.internal:5432/oncall"
    assert Database("postgres://oncall@db.internal/oncall").url.startswith("postgresql+psycopg://")


def test_the_pool_holds_database_pool_size_connections_and_no_more():
    settings = load_settings(database_url="postgresql://oncall@127.0.0.1:1/oncall",
                             database_pool_size=3)
    db = Database(settings.database_url, pool_size=settings.database_pool_size)
    assert (db.writer.pool.size(), db.writer.pool._max_overflow) == (3, 0)  # nothing connects yet
    with pytest.raises(ConfigurationError, match="DATABASE_POOL_SIZE"):
        load_settings(database_pool_size=1)


@pytest.mark.parametrize("given, kept", [("JSON", "json"), ("text", "text"), ("auto", "auto")])
def test_log_format(given, kept):
    assert load_settings(log_format=given).log_format == kept


def test_an_unknown_log_format_is_refused_by_name():
    with pytest.raises(ConfigurationError, match="LOG_FORMAT"):
        load_settings(log_format="xml")
