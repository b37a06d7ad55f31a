"""A stand-in for PagerDuty's Events API v2 and the REST API v2 calls the bot makes.

One HTTPS server (certificate from :class:`tests.standins.tls.TestCA`) serves
both; ``events_url`` and ``api_url`` are the same origin, routed by path:

* ``POST /v2/enqueue`` -- Events v2, validated against the ``/enqueue``
  request schema in ``specs/events-v2.openapi.json`` plus the documented
  limits the schema does not encode (32-char routing key, dedup_key ≤255 and
  required for acknowledge/resolve, payload required for trigger, summary
  ≤1024, https image ``src``, body ≤512 KB).
* ``GET /oncalls``, ``GET /incidents``, ``PUT /incidents/{id}``,
  ``POST /incidents/{id}/notes`` -- REST v2, request bodies and headers checked
  against ``specs/rest-v2-subset.json`` (see ``specs/extract_rest.py``).

Alert model (REFERENCE.md §2): alerts are keyed by (routing_key, dedup_key).
A trigger opens an alert -- and an incident with ``incident_key`` = dedup_key --
unless one is open (then it is deduplicated); acknowledge/resolve apply to an
open alert and are accepted-but-dropped otherwise.  ``PUT /incidents/{id}``
changes the same status.

Deviations from the brief, following the spec: ``POST .../notes`` answers 200
(the spec documents 200, not 201); ``PUT /incidents/{id}`` and ``POST
.../notes`` require a ``From`` header (as for an account-level API key).
"""

import itertools
import time
import uuid
from collections import defaultdict, deque
from datetime import UTC, datetime

from ._server import Reply, Request, StandIn
from .openapi import load_spec, schema_errors, to_json_schema
from .tls import TestCA

ACCEPT = "application/vnd.pagerduty+json;version=2"
MAX_EVENT_BYTES = 512 * 1024
WEB = "https://standin.pagerduty.com"
API = "https://api.pagerduty.com"


EVENTS_SPEC = load_spec("events-v2.openapi.json")
REST_OPERATIONS = load_spec("rest-v2-subset.json")["operations"]


def _events_request_schema() -> dict:
    spec = to_json_schema(EVENTS_SPEC)
    body = spec["paths"]["/enqueue"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    return {**body, "components": spec["components"]}  # so #/components/... resolves


EVENTS_SCHEMA = _events_request_schema()


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _ref(kind: str, id_: str, summary: str, web_path: str) -> dict:
    return {"id": id_, "type": f"{kind}_reference", "summary": summary,
            "self": f"{API}/{web_path}/{id_}", "html_url": f"{WEB}/{web_path}/{id_}"}


class PagerDutyStandIn(StandIn):
    """PagerDuty Events v2 + REST v2 stand-in (HTTPS).

    :param ca: issues the server certificate; clients trust ``ca.ca_bundle_path``.
    :param api_token: the REST token expected as ``Authorization: Token token=…``.
    :param rate_limit_per_minute: if set, Events requests beyond this many per
        routing key in a rolling 60 s window answer 429.
    """

    scheme = "https"

    def __init__(self, ca: TestCA, api_token: str = "pd-test-token",
                 rate_limit_per_minute: int | None = None):
        super().__init__(ssl_context=ca.server_ssl_context())
        self.api_token = api_token
        self.rate_limit_per_minute = rate_limit_per_minute
        # The largest page a list answers, whatever `limit` asks (PagerDuty's is 100);
        # lower it to make a short list come in several pages.
        self.page_limit = 100
        self.events: list[dict] = []  # accepted events: {event, dedup_key, applied, incident_id, time}
        self.incidents: dict[str, dict] = {}  # id -> incident (spec-shaped)
        self.notes: list[dict] = []  # {incident_id, content, from, note}
        self._alerts: dict[tuple[str, str], str] = {}  # (routing_key, dedup_key) -> incident id
        self._oncalls: list[dict] = []
        self._sent: dict[str, deque] = defaultdict(deque)  # routing_key -> request times
        self._ids = itertools.count(1)

    @property
    def events_url(self) -> str:
        return self.origin

    @property
    def api_url(self) -> str:
        return self.origin

    # -- configuration and queries --------------------------------------------
    def set_oncalls(self, oncalls: list[dict]):
        """Configure what ``GET /oncalls`` returns.  Each entry::

            {"user_id": "PUSER01", "user_name": "Ada Lovelace",
             "email": "ada@example.com", "escalation_policy_id": "PEP0001",
             "schedule_id": "PSCHED1",  # or None: a direct (permanent) on-call
             "escalation_level": 1, "start": "2026-01-01T00:00:00Z",
             "end": "2026-01-08T00:00:00Z"}

        ``escalation_level`` defaults to 1; ``start``/``end`` to None.
        """
        with self.lock:
            self._oncalls = [dict(o) for o in oncalls]

    def fail(self, path_prefix: str | None = None, status: int = 500, times: int = 1,
             retry_after: int | None = None, hang: float | None = None):
        """Make the next ``times`` requests (whose path starts with
        ``path_prefix``, or any) answer HTTP ``status``, with ``Retry-After``
        when ``retry_after`` is given.  With ``hang`` they instead sleep that
        long and then answer normally (the request still takes effect).
        """
        self._add_fault(path_prefix, status, times, retry_after, hang)

    def events_for(self, dedup_key: str) -> list[dict]:
        """Accepted events with this dedup_key, in order (incl. dropped ones)."""
        with self.lock:
            return [e for e in self.events if e["dedup_key"] == dedup_key]

    def triggers(self) -> list[dict]:
        """Accepted trigger events, in order."""
        with self.lock:
            return [e for e in self.events if e["event"]["event_action"] == "trigger"]

    def alert_status(self, dedup_key: str, routing_key: str | None = None) -> str | None:
        """``triggered``/``acknowledged``/``resolved`` of the latest alert, or None."""
        with self.lock:
            for (rk, dk), incident_id in reversed(self._alerts.items()):
                if dk == dedup_key and routing_key in (None, rk):
                    return self.incidents[incident_id]["status"]
        return None

    def rest_requests(self, name: str | None = None) -> list[Request]:
        """Normally answered REST v2 requests (not Events), in order; with
        ``name``, only those to that operation (``"listOnCalls"``,
        ``"listIncidents"``, ``"updateIncident"``, ``"createIncidentNote"``) or
        with exactly that path (``"/oncalls"``)."""
        with self.lock:
            return [r for r in self.requests if r.path != "/v2/enqueue"
                    and name in (None, r.path, rest_operation(r.http_method, r.path))]

    # -- StandIn hooks ---------------------------------------------------------
    def fault_matches(self, match, name):
        return name.startswith(match)

    def fault_reply(self, fault, req):
        if req.path.startswith("/v2/"):
            return Reply(fault.status, {"status": "error", "message": "Stand-in fault",
                                        "errors": [f"injected HTTP {fault.status}"]})
        return Reply(fault.status, {"error": {"message": "Stand-in fault", "code": 2000}})

    def route(self, req: Request) -> Reply:
        parts = req.path.strip("/").split("/")
        if req.http_method == "POST" and req.path == "/v2/enqueue":
            return self._enqueue(req)
        op = rest_operation(req.http_method, req.path)
        if op is None:
            self.violation(req, "no such endpoint")
            return Reply(404, {"error": {"message": "Not Found", "code": 2100}})
        denied = self._check_rest_request(req, REST_OPERATIONS[op])
        if denied:
            return denied
        if op == "listOnCalls":
            return self._list_oncalls(req)
        if op == "listIncidents":
            return self._list_incidents(req)
        incident = self.incidents.get(parts[1])
        if incident is None:
            return Reply(404, {"error": {"message": "Not Found", "code": 2100}})
        if op == "updateIncident":
            return self._update_incident(req, incident)
        return self._create_note(req, incident)

    # -- Events v2 ----------------------------------------------------------------
    def _invalid_event(self, req, errors) -> Reply:
        self.violation(req, "; ".join(errors))
        return Reply(400, {"status": "invalid event", "message": "Event object is invalid",
                           "errors": errors})

    def _enqueue(self, req: Request) -> Reply:
        if len(req.raw) > MAX_EVENT_BYTES:
            return self._invalid_event(req, [f"Event body exceeds {MAX_EVENT_BYTES} bytes"])
        event = req.body
        if not isinstance(event, dict):
            return self._invalid_event(req, ["Body is not a JSON object"])
        routing_key = event.get("routing_key")
        if self.rate_limit_per_minute is not None and isinstance(routing_key, str):
            sent, now = self._sent[routing_key], time.monotonic()
            while sent and sent[0] <= now - 60:
                sent.popleft()
            if len(sent) >= self.rate_limit_per_minute:
                return Reply(429, {"status": "throttle event", "message":
                                   "Requests for this service are arriving too quickly. "
                                   "Please retry later."}, failed=True)
            sent.append(now)
        errors = schema_errors(EVENTS_SCHEMA, event) + _event_rule_errors(event)
        if errors:
            return self._invalid_event(req, errors)
        action = event["event_action"]
        dedup_key = event.get("dedup_key") or str(uuid.uuid4())
        incident_id = self._alerts.get((routing_key, dedup_key))
        is_open = incident_id is not None and self.incidents[incident_id]["status"] != "resolved"
        applied = is_open or action == "trigger"
        if action == "trigger" and not is_open:
            incident_id = self._open_incident(event, dedup_key)
            self._alerts[(routing_key, dedup_key)] = incident_id
        elif applied and action != "trigger":
            self._set_status(self.incidents[incident_id],
                             "acknowledged" if action == "acknowledge" else "resolved")
        self.events.append({"event": event, "dedup_key": dedup_key, "applied": applied,
                            "incident_id": incident_id if applied else None,
                            "time": req.time})
        return Reply(202, {"status": "success", "message": "Event processed",
                           "dedup_key": dedup_key})

    def _open_incident(self, event: dict, dedup_key: str) -> str:
        number = next(self._ids)
        incident_id, now = f"PINC{number:03d}", _now()
        title = event["payload"]["summary"]
        self.incidents[incident_id] = {
            **_ref("incident", incident_id, f"[#{number}] {title}", "incidents"),
            "type": "incident", "incident_number": number, "title": title,
            "status": "triggered", "incident_key": dedup_key, "urgency": "high",
            "created_at": now, "updated_at": now, "last_status_change_at": now,
            "service": _ref("service", "PSERVIC", "Stand-in service", "services"),
            "assignments": [],
        }
        return incident_id

    @staticmethod
    def _set_status(incident: dict, status: str):
        now = _now()
        incident.update(status=status, updated_at=now, last_status_change_at=now)

    # -- REST v2 ------------------------------------------------------------------
    def _rest_error(self, req, status, message, code, errors=()) -> Reply:
        self.violation(req, f"{status} {message}" + "".join(f"; {e}" for e in errors))
        error = {"message": message, "code": code}
        if errors:
            error["errors"] = list(errors)
        return Reply(status, {"error": error})

    def _check_rest_request(self, req: Request, op: dict) -> Reply | None:
        """Auth, headers and body per the spec; an error Reply or None."""
        if req.headers.get("authorization") != f"Token token={self.api_token}":
            return self._rest_error(req, 401, "Unauthorized", 2006)
        if req.headers.get("accept") != ACCEPT:
            self.violation(req, f"Accept must be {ACCEPT!r}, got {req.headers.get('accept')!r}")
        if req.raw and not req.headers.get("content-type", "").startswith("application/json"):
            self.violation(req, "Content-Type must be application/json")
        required = {p["name"].lower() for p in op["parameters"]
                    if p["in"] == "header" and p.get("required")}
        if "from" in required and "@" not in req.headers.get("from", ""):
            return self._rest_error(req, 400, "Invalid Input Provided", 2001,
                                    ["From header with a user's email is required"])
        if op["requestBody"] is not None:
            errors = schema_errors(to_json_schema(op["requestBody"]), req.body)
            if errors:
                return self._rest_error(req, 400, "Invalid Input Provided", 2001, errors)
        return None

    def _page(self, req: Request, key: str, items: list, default_limit: int) -> Reply:
        """Classic offset pagination (limit/offset/more/total)."""
        q = {k: v[-1] for k, v in req.query.items()}
        try:
            limit, offset = int(q.get("limit", default_limit)), int(q.get("offset", 0))
        except ValueError:
            return self._rest_error(req, 400, "Invalid Input Provided", 2001,
                                    ["limit and offset must be integers"])
        if limit < 1 or offset < 0 or offset + limit > 10000:
            return self._rest_error(req, 400, "Invalid Input Provided", 2001,
                                    ["offset+limit must be ≤10000"])
        limit = min(limit, self.page_limit)
        return Reply(200, {key: items[offset:offset + limit], "limit": limit,
                           "offset": offset, "more": offset + limit < len(items),
                           "total": len(items) if q.get("total") == "true" else None})

    def _list_oncalls(self, req: Request) -> Reply:
        def wanted(param, value):
            ids = req.query.get(param)
            return ids is None or value in ids

        includes = set(req.query.get("include[]", []))
        items = []
        for o in self._oncalls:
            if not (wanted("escalation_policy_ids[]", o["escalation_policy_id"])
                    and wanted("schedule_ids[]", o.get("schedule_id"))
                    and wanted("user_ids[]", o["user_id"])):
                continue
            user = _ref("user", o["user_id"], o["user_name"], "users")
            if "users" in includes:  # expanded to a full user object
                user.update(type="user", name=o["user_name"], email=o["email"])
            schedule = o.get("schedule_id")
            items.append({
                "escalation_policy": _ref("escalation_policy", o["escalation_policy_id"],
                                          o["escalation_policy_id"], "escalation_policies"),
                "user": user,
                "schedule": schedule and _ref("schedule", schedule, schedule, "schedules"),
                "escalation_level": o.get("escalation_level", 1),
                "start": o.get("start"), "end": o.get("end"),
            })
        return self._page(req, "oncalls", items, default_limit=25)

    def _list_incidents(self, req: Request) -> Reply:
        key = req.query.get("incident_key", [None])[-1]
        statuses = req.query.get("statuses[]")
        items = [i for i in self.incidents.values()
                 if key in (None, i["incident_key"])
                 and (statuses is None or i["status"] in statuses)]
        return self._page(req, "incidents", items, default_limit=25)

    def _update_incident(self, req: Request, incident: dict) -> Reply:
        status = req.body["incident"].get("status")
        if status is not None:
            self._set_status(incident, status)
        return Reply(200, {"incident": incident})

    def _create_note(self, req: Request, incident: dict) -> Reply:
        note = {"id": f"PNOTE{next(self._ids):02d}",
                "user": _ref("user", "PSTANDU", req.headers["from"], "users"),
                "channel": {"summary": "The PagerDuty website or APIs"},
                "content": req.body["note"]["content"], "created_at": _now()}
        self.notes.append({"incident_id": incident["id"], "content": note["content"],
                           "from": req.headers["from"], "note": note})
        return Reply(200, {"note": note})


def rest_operation(http_method: str, path: str) -> str | None:
    """The REST v2 operationId a request maps to, or None (not served)."""
    parts = path.strip("/").split("/")
    op = {("GET", 1, "oncalls"): "listOnCalls",
          ("GET", 1, "incidents"): "listIncidents",
          ("PUT", 2, "incidents"): "updateIncident",
          ("POST", 3, "incidents"): "createIncidentNote",
          }.get((http_method, len(parts), parts[0]))
    if op == "createIncidentNote" and parts[2] != "notes":
        return None
    return op


def _event_rule_errors(event: dict) -> list[str]:
    """Documented Events v2 rules that the OpenAPI schema does not encode."""
    errors = []
    if not isinstance(event.get("routing_key"), str) or len(event["routing_key"]) != 32:
        errors.append("routing_key must be a 32-character integration key")
    dedup_key = event.get("dedup_key")
    if dedup_key is not None and (not isinstance(dedup_key, str) or len(dedup_key) > 255):
        errors.append("dedup_key must be a string of at most 255 characters")
    if event.get("event_action") in ("acknowledge", "resolve") and not dedup_key:
        errors.append("dedup_key is required for acknowledge and resolve")
    if event.get("event_action") == "trigger":
        payload = event.get("payload")
        if not isinstance(payload, dict):
            errors.append("payload is required for trigger")
        elif len(str(payload.get("summary", ""))) > 1024:
            errors.append("payload.summary must be at most 1024 characters")
    for i, image in enumerate(event.get("images") or []):
        if isinstance(image, dict) and not str(image.get("src", "")).startswith("https://"):
            errors.append(f"images[{i}].src must be an https URL")
    return errors
