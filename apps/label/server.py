"""Serving the labeling app: the Gradio UI mounted at `/` of a small FastAPI app that also
carries the fast vote routes (`fast_routes.py`), behind Gradio's login, run by uvicorn.

On the outer app a vote skips the Gradio app's middleware stack and route table: 1.8-2.7 ms
of server CPU per vote instead of 3.1-3.4 ms with the routes added to Gradio's own app (32
annotators back to back, `benchmarks/label_load.py`'s fast client).

Around it all, outermost first: `hardening.RequestLimits` (bodies read in full within a
deadline and a size cap, cross-site requests refused, no CORS answers), `login.LoginLimit`
(failed logins per client and per account name, logins in flight) and `guard.RouteGuard`
(anonymous requests reach the login page only; sessions and events belong to their user;
calls of events the app does not have are refused, `endpoints.Endpoints`).
The password check runs off the event loop (`login.off_loop`); sessions end
(`hardening.SessionTokens`); uvicorn runs its h11 protocol with a deadline on request heads
(`hardening.header_deadline_protocol`), a share of the connections per client and a
deadline on answers the client does not read (`connections.connection_limits`).
"""

from __future__ import annotations

from typing import Any

from .app import LabelApp
from .assets import ADMIN_CSS, CSS, KEYS_JS
from .connections import PER_CLIENT, connection_limits
from .endpoints import Endpoints
from .fast_routes import add_fast_routes, session_user
from .guard import RouteGuard
from .hardening import (
    MAX_HEAD,
    SESSION_HOURS,
    TIMEOUT_S,
    RequestLimits,
    SessionTokens,
    header_deadline_protocol,
)
from .login import LOGIN_LIMIT, NAME_LIMIT, NAME_WINDOW_S, FailedLogins, LoginLimit, off_loop

QUEUE_SIZE = 1024  # Gradio events waiting at once, all users together
# open connections and requests, all clients together; beyond it uvicorn answers 503 (one
# client's share: `connections.PER_CLIENT`)
MAX_CONNECTIONS = 1000
_USER = "mmalign_label.user"  # the request's session user, looked up once, kept in its scope


def build_server(label: LabelApp, host: str = "127.0.0.1", port: int = 7860, *,
                 login_limit: int = LOGIN_LIMIT, name_limit: int = NAME_LIMIT,
                 session_hours: float = SESSION_HOURS, request_timeout: float = TIMEOUT_S,
                 **kwargs: Any) -> Any:  # fmt: skip
    """The ASGI app serving `label`; `kwargs` go to Gradio's mount."""
    import gradio as gr
    from fastapi import FastAPI
    from starlette.requests import Request
    from starlette.routing import Mount

    demo = label.build()
    demo.queue(default_concurrency_limit=None, max_size=QUEUE_SIZE)
    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)
    add_fast_routes(app, label.labeling)
    # show_error=False: an exception's text (SQL, server paths) stays in the server's log;
    # gr.Error messages, written for the user, still reach the client
    gr.mount_gradio_app(
        app, demo, path="/", server_name=host, server_port=port, auth=off_loop(label.auth),
        auth_message="mmalign labeling: sign in with the account your admin made for you.",
        css=CSS + ADMIN_CSS, head=KEYS_JS, show_error=False, ssr_mode=False,
        max_file_size="20mb", footer_links=[], run_history=False, **kwargs,
    )  # fmt: skip
    gradio_app = next(r.app for r in app.routes if isinstance(r, Mount))
    gradio_app.tokens = SessionTokens(
        label.auth.credential, session_hours * 3600, verified=label.auth.verified
    )

    def user_of(scope: dict[str, Any]) -> str | None:
        # once per request: RequestLimits (the body cap) and RouteGuard both ask
        if _USER not in scope:
            scope[_USER] = session_user(gradio_app, Request(scope))
        return scope[_USER]

    guarded = LoginLimit(RouteGuard(app, user_of, Endpoints.of(demo)), FailedLogins(login_limit),
                         FailedLogins(name_limit, NAME_WINDOW_S))  # fmt: skip
    return RequestLimits(
        guarded, timeout_s=request_timeout, signed_in=lambda scope: user_of(scope) is not None
    )


def serve(label: LabelApp, host: str = "127.0.0.1", port: int = 7860, *,
          connections_per_client: int = PER_CLIENT, **kwargs: Any) -> None:  # fmt: skip
    """Serve `label` on host:port until the process ends; `kwargs` go to `build_server`.
    `connections_per_client`: open connections per client address (0: no share); a
    connection whose answers go unread for `request_timeout` seconds is closed."""
    import uvicorn

    timeout = float(kwargs.get("request_timeout", TIMEOUT_S))
    protocol = connection_limits(
        header_deadline_protocol(timeout),
        per_client=connections_per_client,
        write_timeout_s=timeout,
    )
    uvicorn.run(build_server(label, host, port, **kwargs), host=host, port=port,
                log_level="warning", http=protocol, h11_max_incomplete_event_size=MAX_HEAD,
                # no websockets: the app uses none, and an upgrade would swap the protocol
                # out from under the per-client count (connections.py) so it never closes
                ws="none",
                limit_concurrency=MAX_CONNECTIONS)  # fmt: skip
