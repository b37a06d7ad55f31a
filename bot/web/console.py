"""GET /console/…: the read-only web console (server-rendered, no JavaScript), and its
sign-in: GET /console/sign-in?token=… shows a Sign in button, and only the POST it
sends spends the one-time link and sets the session cookie.

Every value shown may come from an alert, which anyone who reaches the webhook writes:
templates autoescape, and every response forbids scripts, framing and referrers (the
sign-in URL holds the token). Pages need a session; without one they answer 401 with
how to get one. Without CONSOLE_SECRET every /console path answers 404 saying so.
"""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Callable
from functools import cache
from importlib.resources import files
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

from anyio import to_thread
from fastapi import FastAPI, Request
from fastapi.responses import RedirectResponse, Response
from jinja2 import Environment, PackageLoader, StrictUndefined

from bot.domain.console import (
    LINK_TTL,
    SESSION_COOKIE,
    SESSION_TTL,
    ConsoleError,
    parse_filter,
    parse_period,
    session_user,
)
from bot.domain.durations import format_duration
from bot.domain.incident import IncidentState
from bot.usecases import console as usecases
from bot.usecases.console import SIGN_IN_PATH, Console

CSRF_COOKIE = "oncall_console_signin"
MAX_FORM_BYTES = 4096
SECURITY_HEADERS = {
    "Content-Security-Policy": ("default-src 'none'; style-src 'self'; img-src 'self'; "
                                "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"),
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
    "Cross-Origin-Opener-Policy": "same-origin",
}
HOW_TO_SIGN_IN = ("Type /oncall console in Slack for a one-time sign-in link, or ask an "
                  "operator for one (oncall-bot console-link --user U…).")


def _when(value: str | None) -> str:
    """An ISO time as `2026-12-06 22:04 UTC` (the record keeps UTC)."""
    return "—" if not value else f"{value[:10]} {value[11:16]} UTC"


@cache
def _templates() -> Environment:
    env = Environment(loader=PackageLoader("bot", "templates/console"), autoescape=True,
                      undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters.update(when=_when, query=lambda values: urlencode(values, doseq=True),
                       duration=lambda d: "—" if d is None else format_duration(d))
    return env


def _secured(response: Response) -> Response:
    response.headers.update(SECURITY_HEADERS)
    return response


def register(app: FastAPI, *, console: Console) -> None:
    secure_cookies = (console.public_url or "").startswith("https://")

    def page(template: str, status: int = 200, **values: Any) -> Response:
        html = _templates().get_template(template).render(**{"user": None, **values})
        return _secured(Response(html, status_code=status, media_type="text/html"))

    def refused(status: int, message: str, user: str | None = None) -> Response:
        return page("message.html", status, title="On-call console", message=message,
                    hint=HOW_TO_SIGN_IN if status == 401 else None, user=user)

    if not console.enabled:
        @app.get("/console")
        @app.get("/console/{rest:path}")
        async def console_off(rest: str = "") -> Response:
            return refused(404, "The web console is off: CONSOLE_SECRET is not set.")
        return

    def user_of(request: Request) -> str | None:
        return session_user(request.cookies.get(SESSION_COOKIE), secret=console.secret or "",
                            now=console.clock())

    def signed_in(handler: Callable[..., Any]) -> Callable[..., Any]:
        """Runs the page's handler only with a valid session; 401 otherwise."""
        async def guarded(request: Request) -> Response:
            user = user_of(request)
            if user is None:
                return refused(401, "Sign in to see the on-call console.")
            try:
                return await handler(request, user)
            except ConsoleError as exc:
                return refused(400, str(exc), user)
        guarded.__name__ = handler.__name__
        return guarded

    def run(work: Callable[[], Any]) -> Any:
        return to_thread.run_sync(work)

    # --- sign-in --------------------------------------------------------------------

    @app.get(SIGN_IN_PATH)
    async def sign_in_page(request: Request) -> Response:
        token = request.query_params.get("token", "")
        state = await run(lambda: usecases.link_state(console, token)) if token else "unknown"
        if state != "fresh":
            return refused(401, {"used": "This sign-in link was used already.",
                                 "expired": "This sign-in link has expired."}.get(
                state, "This is not a sign-in link the bot gave."))
        nonce = secrets.token_urlsafe(24)
        response = page("sign_in.html", token=token, nonce=nonce,
                        minutes=int(LINK_TTL.total_seconds() // 60))
        response.set_cookie(CSRF_COOKIE, nonce, max_age=int(LINK_TTL.total_seconds()),
                            path=SIGN_IN_PATH, httponly=True, samesite="strict",
                            secure=secure_cookies)
        return response

    @app.post(SIGN_IN_PATH)
    async def sign_in(request: Request) -> Response:
        """Spends the link. Cross-site posts are refused by their Origin (and Fetch
        metadata) and by the nonce: the form must carry the value of a SameSite=Strict
        cookie that only this site's sign-in page sets."""
        if not _same_origin(request, console.public_url):
            return refused(403, "This sign-in came from another site; open your link again.")
        form = await _form(request)
        if form is None:
            return refused(400, "The sign-in form is malformed.")
        nonce = request.cookies.get(CSRF_COOKIE, "")
        if not nonce or not hmac.compare_digest(nonce.encode(), form.get("nonce", "").encode()):
            return refused(403, "This sign-in did not come from its sign-in page; open your "
                                "link again.")
        try:
            cookie = await run(lambda: usecases.sign_in(console, form.get("token", "")))
        except ConsoleError as exc:
            return refused(401, str(exc))
        response = _secured(RedirectResponse("/console/incidents", status_code=303))
        response.set_cookie(SESSION_COOKIE, cookie, max_age=int(SESSION_TTL.total_seconds()),
                            path="/console", httponly=True, samesite="strict",
                            secure=secure_cookies)
        response.delete_cookie(CSRF_COOKIE, path=SIGN_IN_PATH, httponly=True, samesite="strict",
                               secure=secure_cookies)
        return response

    @app.get("/console/sign-out")
    async def sign_out() -> Response:
        """Forgets the session in this browser (the cookie is signed, not stored: another
        copy of it stays valid until it expires, or until CONSOLE_SECRET changes)."""
        response = refused(200, "Signed out.")
        response.delete_cookie(SESSION_COOKIE, path="/console", httponly=True,
                               samesite="strict", secure=secure_cookies)
        return response

    @app.get("/console/static/console.css")
    async def stylesheet() -> Response:
        css = files("bot").joinpath("templates/console/console.css").read_text()
        return _secured(Response(css, media_type="text/css"))

    # --- pages ----------------------------------------------------------------------

    @app.get("/console")
    async def home() -> Response:
        return _secured(RedirectResponse("/console/incidents", status_code=303))

    @signed_in
    async def incident_list(request: Request, user: str) -> Response:
        params = request.query_params
        wanted = parse_filter(params.getlist("state"), params.get("model"), params.get("since"))
        found = await run(lambda: usecases.incidents(console, wanted))
        return page("incidents.html", user=user, wanted=wanted, found=found,
                    states=[s.value for s in IncidentState])

    @signed_in
    async def incident_page(request: Request, user: str) -> Response:
        try:
            incident_id = int(request.path_params["incident_id"])
        except ValueError:
            incident_id = -1
        detail = await run(lambda: usecases.incident(console, incident_id)) if incident_id > 0 else None
        if detail is None:
            return refused(404, "There is no such incident.", user)
        return page("incident.html", user=user, i=detail)

    @signed_in
    async def model_list(request: Request, user: str) -> Response:
        period, _ = parse_period(request.query_params.get("period"))
        name = request.query_params.get("name")
        if name:
            found = await run(lambda: usecases.model(console, name, period))
            return page("model.html", user=user, name=name, period=period, m=found)
        found = await run(lambda: usecases.models(console, period))
        return page("models.html", user=user, period=period, rows=found["rows"])

    @signed_in
    async def scorecard_page(request: Request, user: str) -> Response:
        period, _ = parse_period(request.query_params.get("period"))
        card = await run(lambda: usecases.scorecard(console, period))
        return page("scorecard.html", user=user, period=period, s=card,
                    charts=usecases.charts_available())

    @signed_in
    async def chart_image(request: Request, user: str) -> Response:
        period, _ = parse_period(request.query_params.get("period"))
        if not usecases.charts_available():
            return refused(404, "Charts need matplotlib: pip install 'oncall-bot[charts]'.", user)
        png = await run(lambda: usecases.chart(console, period))
        return _secured(Response(png, media_type="image/png"))

    app.add_api_route("/console/incidents", incident_list, methods=["GET"])
    app.add_api_route("/console/incidents/{incident_id}", incident_page, methods=["GET"])
    app.add_api_route("/console/models", model_list, methods=["GET"])
    app.add_api_route("/console/scorecard", scorecard_page, methods=["GET"])
    app.add_api_route("/console/scorecard.png", chart_image, methods=["GET"])

    @app.get("/console/{rest:path}")
    async def not_found(request: Request, rest: str) -> Response:
        return refused(404 if user_of(request) else 401, "There is no such page.")


def _same_origin(request: Request, public_url: str | None) -> bool:
    """False for a request the browser says came from another site: by Fetch metadata
    (Sec-Fetch-Site, sent by current browsers whatever the referrer policy), else by
    Origin. Under Referrer-Policy: no-referrer a browser sends `Origin: null` on a form
    POST, which proves nothing either way; the nonce cookie still has to match. Clients
    that send neither (curl) pass: the link's token and the nonce are still required."""
    site = request.headers.get("sec-fetch-site")
    if site is not None:
        return site in ("same-origin", "none")
    origin = request.headers.get("origin")
    if origin is None or origin == "null":
        return True
    allowed = {f"{request.url.scheme}://{request.headers.get('host', '')}"}
    if public_url:
        parts = urlsplit(public_url)
        allowed.add(f"{parts.scheme}://{parts.netloc}")
    return origin in allowed


async def _form(request: Request) -> dict[str, str] | None:
    """The urlencoded form, read up to MAX_FORM_BYTES; None when larger or not a form."""
    if request.headers.get("content-type", "").split(";")[0].strip() != \
            "application/x-www-form-urlencoded":
        return None
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            return None
    try:
        fields = parse_qs(body.decode("ascii"), strict_parsing=False, max_num_fields=10)
    except (UnicodeDecodeError, ValueError):
        return None
    return {key: values[0] for key, values in fields.items()}
