"""Make a ``pagerduty`` 7.2.0 client try every request exactly once.

The bot's outbox owns retries, so the client's own loop in
``ApiClient.request`` (pagerduty/api_client.py) must be switched off.  By
default it retries 429 forever (``1.5·2ⁿ`` s blocking sleeps, Retry-After
ignored), the Events client also retries ``{500: 2, 502: 4, 503: 6, 504: 6}``
(3-7 attempts in all), and transport errors are retried 3 times.  Set, on the
instance, *after* construction (``__init__`` resets ``retry``)::

    client.retry = {429: 1}          # 429 takes the counted-retry branch, not the
                                     # retry-forever one; other statuses: no entry
    client.max_http_attempts = -1    # `sum(attempts) > max_http_attempts` is true
                                     # before the first counted retry -> no retry
    client.max_network_attempts = 0  # a TransportError (refused, TLS, timeout)
                                     # raises pagerduty.Error on the first failure

``max_http_attempts = 0`` is NOT enough (the test is ``>``, so one retry
remains), and ``retry = {}`` alone still retries 429 forever.  Verified against
PagerDutyStandIn.  With these settings the Events helpers and the REST
``r*``/``j*``/``iter_*`` methods raise ``pagerduty.HttpError`` (``.response``
set; ``ServerHttpError`` for 5xx) after one request; plain ``get``/``post``/
``put`` return the error Response, except 401, which always raises.  The
per-request timeout is ``client.timeout`` (default 60 s).

Pass the CA bundle as ``verify=ssl.create_default_context(cafile=path)``:
httpx2 2.16 still accepts ``verify=<path>`` but emits a DeprecationWarning.
"""


def single_attempt(client):
    """Apply the settings above to ``client`` and return it."""
    client.retry = {429: 1}
    client.max_http_attempts = -1
    client.max_network_attempts = 0
    return client
