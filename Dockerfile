# The bot's image: python:3.11-slim, the locked dependencies, a non-root user, and the
# shipped runbooks baked in at /app/runbooks (mount your own over it, or point
# ONCALL_RUNBOOKS elsewhere). Not built in CI (no Docker engine there): see docs/deploy.md.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
# Dependencies first, from the lock file, so a code change reuses this layer.
COPY requirements.lock ./
RUN pip install --no-deps -r requirements.lock
COPY pyproject.toml README.md LICENSE ./
COPY bot ./bot
RUN pip install --no-deps . && rm -rf build ./*.egg-info
COPY runbooks ./runbooks

# A non-root user; /data holds the SQLite file when DATABASE_URL is not PostgreSQL.
RUN useradd --system --uid 10001 --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin oncall \
    && mkdir /data && chown oncall /data
USER 10001

ENV ONCALL_RUNBOOKS=/app/runbooks \
    DATABASE_URL=sqlite:////data/oncall-bot.db \
    LOG_FORMAT=json \
    HOST=0.0.0.0 \
    PORT=8080
VOLUME ["/data"]
EXPOSE 8080
CMD ["oncall-bot", "serve"]
