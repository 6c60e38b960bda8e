"""The vote path outside Gradio's queue: plain FastAPI routes beside the mounted Gradio app.

Gradio runs every API call through its queue (join, then a result stream), and an
annotator's vote used to be two such calls (`vote`, then `next_pair`). These routes do the
same work in one HTTP request: `POST /label_api/vote` stores the vote (one transaction,
acknowledged after commit, idempotent by the client's vote id) and answers with the
caller's next pair; `GET /label_api/next_pair` gives the first one. They live on the outer
FastAPI app that the Gradio UI is mounted on (`server.py`), so a vote also skips the
Gradio app's middleware stack and its route table. The work is `labeling.Labeling`'s, the
same as the Gradio API's.

Security is Gradio's login, unchanged: the caller is the user of the session cookie that
Gradio's `/login` set (the same token table Gradio's own routes check); no cookie, no
answer (401). The annotator's name is never read from the request. Bodies must be JSON
(415 otherwise) and a request whose `Origin` is another site is refused (403): a browser
sends `Origin` with every cross-site POST, and a JSON body needs a CORS preflight first,
so the session cookie cannot be used to vote from another page (CSRF). `next_pair` is a GET
that reserves a pair (a lease), and a link from another site is a top-level navigation that
carries the `SameSite=Lax` cookie: both routes refuse what `hardening.cross_site` names
(403), a navigation marked `Sec-Fetch-Site: cross-site` or `same-site` included, here as in
`hardening.RequestLimits` in front of the server, so the routes stay closed to other sites
where they are mounted without it.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from .hardening import cross_site
from .jsonbody import Refused, parse_json
from .labeling import Labeling, whole_number
from .store import VoteConflict, VoteError

VOTE_FIELDS = ("vote_id", "pair_id", "choice", "left_image", "decide_ms")


def session_user(app: Any, request: Request) -> str | None:
    """The logged-in user of this request's Gradio session cookie, or None.

    Gradio's `/login` stores `token -> user name` in `app.tokens` and sets the token as
    `access-token-<cookie_id>` (and an `-unsecure-` twin for plain-HTTP localhost); this is
    the lookup Gradio's own `login_check` does (gradio/routes.py, `get_current_user`).
    """
    token = request.cookies.get(f"access-token-{app.cookie_id}") or request.cookies.get(
        f"access-token-unsecure-{app.cookie_id}"
    )
    user = app.tokens.get(token) if token else None
    return str(user) if user else None


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def add_fast_routes(app: FastAPI, labeling: Labeling) -> None:
    """Add `/label_api/vote` and `/label_api/next_pair` to `app`, the FastAPI app the Gradio
    UI gets mounted on; the login is the mounted Gradio app's (found on the first request)."""
    from starlette.routing import Mount

    mounted: list[Any] = []

    def gradio_app() -> Any:
        if not mounted:
            mounted.extend(r.app for r in app.routes if isinstance(r, Mount))
        return mounted[0]

    async def next_pair(request: Request) -> JSONResponse:
        user = session_user(gradio_app(), request)
        if user is None:
            return _error(401, "not logged in")
        refusal = cross_site(request.scope)  # no header (scripts, curl): not a browser's
        if refusal:
            return _error(403, refusal)
        return JSONResponse(await run_in_threadpool(labeling.next_for, user))

    async def vote(request: Request) -> JSONResponse:
        """Store the session user's vote, a JSON object of `VOTE_FIELDS` (+ `answers`), and
        answer after the commit with `{status, vote_id, pair_id, annotator, next}`.

        `vote_id` is the client's, new for every vote: 8-64 characters [A-Za-z0-9_-] (the page
        sends a uuid4 hex per pair shown), unique across all annotators. A repeated id with the
        same `pair_id`, `choice`, `left_image` and answers is a retry (`decide_ms` is not
        compared): nothing is stored and `status` says what became of the first send (`stored`
        the first time, then `duplicate`, or `undone` once withdrawn: `votes.Ack`). The user's
        own id sent with any of those different is refused with 409 and `{"status":
        "conflict", "error": ...}`: nothing is stored, the first vote stands. Another
        annotator's id (whatever the other fields), or a new id on a pair the user already has
        a vote on (not undone), is refused with 400 (docs/labeling.md, "API for scripts").
        """
        user = session_user(gradio_app(), request)
        if user is None:
            return _error(401, "not logged in")
        refusal = cross_site(request.scope)
        if refusal:
            return _error(403, refusal)
        if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
            return _error(415, "send the vote as application/json")
        try:
            body = parse_json(await request.body())
        except Refused as err:
            return _error(400, str(err))
        except ValueError:
            return _error(400, "the body is not valid JSON")
        if not isinstance(body, dict):
            return _error(400, f"the body must be a JSON object with {VOTE_FIELDS}")
        missing = [k for k in VOTE_FIELDS if k not in body]
        if missing:
            return _error(400, f"missing fields: {missing}")
        answers = body.get("answers")
        if answers is not None and not (
            isinstance(answers, dict) and all(isinstance(v, str) for v in answers.values())
        ):
            return _error(400, "answers must be an object of criterion -> answer (text)")
        try:
            left_image, decide_ms = (whole_number(body[k]) for k in ("left_image", "decide_ms"))
        except ValueError:
            return _error(400, "left_image and decide_ms must be integers")

        def store_and_next() -> dict[str, Any]:  # acknowledged only after the commit
            return labeling.vote(
                user, vote_id=body["vote_id"], pair_id=body["pair_id"],
                choice=body["choice"], left_image=left_image, decide_ms=decide_ms,
                answers=answers,  # criterion -> answer, several questions per pair
            )  # fmt: skip

        try:
            return JSONResponse(await run_in_threadpool(store_and_next))
        except VoteConflict as err:  # the caller's own id, reused for another vote
            return JSONResponse({"status": "conflict", "error": str(err)}, status_code=409)
        except VoteError as err:
            return _error(400, str(err))

    app.add_api_route("/label_api/next_pair", next_pair, methods=["GET"])
    app.add_api_route("/label_api/vote", vote, methods=["POST"])
