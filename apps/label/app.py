"""The Gradio labeling app: two images side by side, the annotator picks one.

Identity always comes from the logged-in session (`gr.Request.username`, Gradio's
`auth=` against the users file); no function takes a user name from the client. Every
vote carries an id: the UI makes one when it shows a pair (a double submit of that pair
is stored once), API clients send their own (a retried request is stored once).

API (through `gradio_client`, logged in): `next_pair() -> {pair_id, prompt, left_image}`,
`vote(vote_id, pair_id, choice, left_image, decide_ms) -> {status, vote_id, pair_id,
annotator, next}` (`next`: the caller's next pair, so a client needs one call per vote;
`status`: `stored`, `duplicate` for a retry, `undone` for a retry of a vote undone since,
which stays undone: `votes.Ack`; a vote id reused for a different vote is refused with a
message starting `conflict:`, `votes.VoteConflict`),
`undo() -> {pair_id}`, `my_votes() -> [..]` (the caller's own votes only),
`admin_stats()` (admins only).

The fast path, outside Gradio's queue (`fast_routes.py`, added by `server.py`): `POST
/label_api/vote` with the same fields as JSON and `GET /label_api/next_pair`, on the same
login session cookie. Both paths vote through `labeling.Labeling`.
"""

from __future__ import annotations

import html
import os
import time
import uuid
from pathlib import Path
from typing import Any

import gradio as gr

from . import generate as generate_module
from .criteria import DEFAULT, CriteriaError
from .fragments import PROGRESS_LOADING, admin_view, progress_html, prompt_html
from .generate import GenerateGate, PairGenerator
from .images import ImageError, load_image
from .labeling import Labeling, whole_number
from .logbudget import LOG
from .quality import (
    QUALITY_HEADERS,
    quality_rows,
    quality_settings,
    quality_summary,
    team_quality,
)
from .stats import summarize
from .store import Pair, Store, VoteConflict, VoteError
from .users import Authenticator
from .vlm_pairs import is_vlm, response_html, responses_of


def _refused(message: str) -> gr.Error:
    """A request refused with `message` for the client and nothing in the server's log (a
    `gr.Error` prints its stack trace by default: some 2 KiB a refused vote)."""
    return gr.Error(message, print_exception=False)


def _user(request: gr.Request | None) -> str:
    name = getattr(request, "username", None)
    if not name:  # Gradio's auth guards every route; this guards a misconfigured launch
        raise _refused("not logged in")
    return str(name)


_ONE_AT_A_TIME = "⚠️ One generation at a time: wait a moment, then press Generate again."
_BUSY = "⚠️ The model is busy with other users' images{waited}: press Generate again."


class LabelApp:
    """The app over one store and one image folder; `model` switches on prompt mode."""

    def __init__(
        self,
        store: Store,
        image_root: str | Path,
        auth: Authenticator,
        *,
        model: str | None = None,
        seed: int | None = None,
        steps: int | None = None,
        device: Any = None,
        dtype: str = "float32",
    ) -> None:
        self.store = store
        self.image_root = Path(image_root)
        self.image_root.mkdir(parents=True, exist_ok=True)
        self.auth = auth
        self.model_name = model
        self.labeling = Labeling(store, seed=seed)
        self.criteria = self.labeling.criteria
        self.vlm = is_vlm(store)  # an image and a prompt above two text responses
        self.generator = (
            PairGenerator(store, self.image_root, model, steps=steps, device=device, dtype=dtype)
            if model
            else None
        )
        self.gate = GenerateGate()  # one generation at a time, a gap per user (generate.py)
        self.api_queue = os.environ.get("MMALIGN_LABEL_API_QUEUE", "1") == "1"
        # "1" puts the page's vote/undo events back on Gradio's queue (for comparisons)
        self.ui_queue = os.environ.get("MMALIGN_LABEL_UI_QUEUE", "0") == "1"

    # ------------------------------------------------------------------ helpers

    def _question(self, step: int) -> str:
        """The question above the pair: nothing extra for a one-question run."""
        if len(self.criteria.items) == 1 and self.criteria.items[0].name == "overall":
            return ""
        return f"Question {step + 1} of {len(self.criteria.items)}: {self.criteria.question(step)}"

    def _content(self, pair: Pair, left: int) -> tuple[Any, Any, Any]:
        """(left, right, top): two images (top None), or in VLM mode two responses under
        the pair's image. ImageError when an image cannot be shown."""
        if self.vlm:
            texts = responses_of(self.store, pair.pair_id)
            top = load_image(self.image_root, pair.image_0)
            return response_html(texts[left]), response_html(texts[1 - left]), top
        refs = (pair.image_0, pair.image_1)
        return (load_image(self.image_root, refs[left]),
                load_image(self.image_root, refs[1 - left]), None)  # fmt: skip

    def _show(self, user: str, pair: Pair | None, note: str = "") -> tuple[Any, ...]:
        """Outputs for the page: state, prompt, left, right, progress, status, top image."""
        done, total = self.store.progress(user)
        if pair is None:
            empty = (
                "Your queue is done. Thank you!"
                if not self.model_name
                else ("Type a prompt and press Generate to get two images to compare.")
            )
            return ({}, prompt_html(None, empty), None, None, progress_html(done, total), note,
                    None)  # fmt: skip
        left = self.labeling.coin()
        try:
            content = self._content(pair, left)
        except ImageError as err:
            # the reason names server paths (the image folder): the log gets it, the page not
            LOG.write(user, f"label: cannot show pair {pair.pair_id}: {err}")
            return ({}, prompt_html(pair.prompt, pair_id=pair.pair_id), None, None,
                    progress_html(done, total), f"⚠️ cannot show pair {pair.pair_id}: an "
                    "image of it is missing or unreadable (the server's log says why)",
                    None)  # fmt: skip
        state = {
            "pair_id": pair.pair_id,
            "left_image": left,
            "vote_id": uuid.uuid4().hex,  # one id per shown pair: a double submit counts once
            "shown_at": time.monotonic(),
            "answers": {},  # the answers given so far to this pair's questions
        }
        question = self._question(0)
        return (state, prompt_html(pair.prompt, question, pair_id=pair.pair_id), content[0],
                content[1], progress_html(done, total), note, content[2])  # fmt: skip

    def _next_question(self, state: dict[str, Any], note: str) -> tuple[Any, ...]:
        """The same pair with the question after the answers in `state`."""
        pair = self.store.get_pair(state["pair_id"])
        prompt = "" if pair is None else pair.prompt
        step = len(state["answers"])
        return (state, prompt_html(prompt, self._question(step), pair_id=state["pair_id"]),
                gr.skip(), gr.skip(), gr.skip(), note, gr.skip())  # fmt: skip

    # -------------------------------------------------------------------- UI events

    def on_load(self, request: gr.Request) -> tuple[Any, ...]:
        user = _user(request)
        is_admin = self.auth.role(user) == "admin"
        shown = self._show(user, self.store.next_pair(user))
        who = f"Signed in as **{html.escape(user)}**" + (" (admin)" if is_admin else "")
        return (*shown, who, gr.Tab(visible=is_admin))

    def on_vote(self, choice: str, state: dict[str, Any], request: gr.Request) -> tuple[Any, ...]:
        user = _user(request)
        if not state or "pair_id" not in state:
            return self._show(user, self.store.next_pair(user), "Nothing to vote on.")
        names = self.criteria.names
        given = dict(state.get("answers") or {})
        label = {"left": "Left", "right": "Right", "tie": "Tie", "both_bad": "Both bad",
                 "skip": "Skipped"}[choice]  # fmt: skip
        if choice != "skip" and len(names) > 1:
            given[names[len(given)]] = choice
            if len(given) < len(names):  # more questions about this pair: no vote yet
                return self._next_question({**state, "answers": given}, f"✓ {label}")
        ms = int(1000 * (time.monotonic() - state["shown_at"]))
        first = "skip" if choice == "skip" else given.get(names[0], choice)
        try:
            answers = self.criteria.check_answers(first, None if first == "skip" else given)
            ack = self.store.record_vote(
                vote_id=state["vote_id"], annotator=user, pair_id=state["pair_id"],
                choice=first, left_image=state["left_image"], decide_ms=ms,
                answers=answers if self.criteria != DEFAULT else None,
            )  # fmt: skip
        except VoteConflict:  # a second click with another answer on a pair already voted on
            note = "⚠️ This pair's vote was already saved with another answer; it stands."
            return self._show(user, self.store.next_pair(user), note)
        except (VoteError, CriteriaError) as err:
            return self._show(user, self.store.next_pair(user), f"⚠️ {err}")
        if ack.status == "undone":  # this pair's vote was sent before and undone since
            note = "⚠️ That vote was undone, so it was not saved: vote on the pair again."
            return self._show(user, self.store.next_pair(user), note)
        saved = "saved" if ack.status == "stored" else "already saved"
        note = f"✓ {label} {saved} ({ms / 1000:.1f} s)"
        return self._show(user, self.store.next_pair(user), note)

    def _voter(self, choice: str) -> Any:
        def vote(state: dict[str, Any], request: gr.Request) -> tuple[Any, ...]:
            return self.on_vote(choice, state, request)

        vote.__name__ = f"ui_{choice}"  # keeps the API name `vote` for `api_vote`
        return vote

    def on_undo(self, state: dict[str, Any], request: gr.Request) -> tuple[Any, ...]:
        user = _user(request)
        if state and state.get("answers"):  # mid-pair: step back one question, store nothing
            given = dict(state["answers"])
            given.popitem()
            return self._next_question({**state, "answers": given}, "↩ Answer again.")
        pair_id = self.store.undo_last(user)
        if pair_id is None:
            return self._show(user, self.store.next_pair(user), "Nothing to undo.")
        return self._show(user, self.store.get_pair(pair_id), "↩ Last vote undone: vote again.")

    def on_generate(self, prompt: str, request: gr.Request) -> tuple[Any, ...]:
        user = _user(request)
        prompt = (prompt or "").strip()
        if not prompt:
            return self._show(user, self.store.next_pair(user), "⚠️ Type a prompt first.")
        if len(prompt) > 500:
            return self._show(user, None, "⚠️ The prompt is over 500 characters.")
        if self.generator is None:  # the Generate button exists only in prompt mode
            raise _refused("this server has no model to generate pairs")
        generator = self.generator
        outcome, pair = self.gate.run(user, lambda: generator.generate(prompt))
        if outcome == "mine":
            return self._show(user, None, _ONE_AT_A_TIME)
        if outcome != "ran":  # "full", or "waited": another user's generation outlasted the wait
            waited = (
                f" (waited {generate_module.GENERATE_WAIT_S:g} s)" if outcome == "waited" else ""
            )
            return self._show(user, None, _BUSY.format(waited=waited))
        return self._show(user, pair, f"Two images from {self.model_name} (different seeds).")

    def on_admin(self, request: gr.Request) -> tuple[Any, ...]:
        stats = self.admin_stats(request)
        return (*admin_view(stats), quality_rows(stats["quality"]),
                quality_summary(stats["quality"]))  # fmt: skip

    # --------------------------------------------------------------------- API

    def api_next_pair(self, request: gr.Request) -> dict[str, Any]:
        """The caller's next pair and a random left image (0 or 1); {} when the queue is empty."""
        return self.labeling.next_for(_user(request))

    def api_vote(
        self, vote_id: str, pair_id: str, choice: str, left_image: int, decide_ms: int,
        request: gr.Request, answers: dict[str, str] | None = None,
    ) -> dict[str, Any]:  # fmt: skip
        """Store the caller's vote; returns only after the vote is committed. `answers`:
        criterion -> answer for a run with several questions.

        `vote_id` is the client's, new for every vote: 8-64 characters [A-Za-z0-9_-], unique
        across all annotators. Sent again with the same `pair_id`, `choice`, `left_image` and
        answers it is a retry (`decide_ms` not compared): nothing is stored, `status` is
        `duplicate` (the first send counts) or `undone` (withdrawn since). Sent again with any
        of those different it is refused with an error starting `conflict:` (nothing stored,
        the first vote stands); another annotator's id is refused as before, whatever the
        fields. To vote on a pair again after an undo, use a new id (docs/labeling.md, "API
        for scripts")."""
        user = _user(request)
        try:
            left, ms = whole_number(left_image), whole_number(decide_ms)
        except ValueError:
            raise _refused("left_image and decide_ms must be integers") from None
        try:
            return self.labeling.vote(
                user, vote_id=vote_id, pair_id=pair_id, choice=choice, left_image=left,
                decide_ms=ms, answers=answers,
            )  # fmt: skip
        except VoteError as err:  # a clean message; anything else reaches the client as
            raise _refused(str(err)) from err  # a bare "Error" (show_error=False)

    def api_undo(self, request: gr.Request) -> dict[str, Any]:
        """Withdraw the caller's last vote."""
        return {"pair_id": self.store.undo_last(_user(request))}

    def api_my_votes(self, request: gr.Request) -> list[dict[str, Any]]:
        """The caller's own votes (never anyone else's)."""
        return self.store.votes_of(_user(request))

    def admin_stats(self, request: gr.Request) -> dict[str, Any]:
        """Counts, agreement, position bias and time per vote (admins only)."""
        user = _user(request)
        if self.auth.role(user) != "admin":
            raise _refused("admin only")
        return {**summarize(self.store.all_votes()),
                "quality": team_quality(self.store, **quality_settings(self.store))}  # fmt: skip

    # ------------------------------------------------------------------- layout

    def build(self) -> gr.Blocks:
        with gr.Blocks(title="mmalign · label") as demo:
            state = gr.State({})
            with gr.Tab("Label"):
                with gr.Row(equal_height=True):
                    gr.Markdown(
                        f"### mmalign · which {'response' if self.vlm else 'image'} is better?",
                        scale=3,
                    )
                    who = gr.Markdown(scale=2)
                    gr.Button("Log out", link="/logout", size="sm", scale=0, min_width=90)
                progress = gr.HTML(PROGRESS_LOADING)
                prompt_box = None
                generate_btn = None
                if self.model_name:
                    with gr.Row(equal_height=True):
                        prompt_box = gr.Textbox(placeholder="Type a prompt, e.g. 'a red circle "
                                                "on a blue background'", show_label=False,
                                                scale=5, max_length=500)  # fmt: skip
                        generate_btn = gr.Button("Generate", variant="primary", scale=1)
                prompt = gr.HTML(prompt_html(None, "Loading ..."))
                # VLM mode: the pair's image above the prompt's two text responses
                top = gr.Image(label="Image", type="pil", interactive=False, height=320,
                               format="png", elem_classes="lbl-top", buttons=[],
                               visible=self.vlm)  # fmt: skip
                with gr.Row(equal_height=True):
                    if self.vlm:
                        left = gr.HTML(elem_classes="lbl-resp", elem_id="lbl-resp-left")
                        right = gr.HTML(elem_classes="lbl-resp", elem_id="lbl-resp-right")
                    else:
                        left = gr.Image(label="Left", type="pil", interactive=False,
                                        height=440, format="png", elem_classes="lbl-img",
                                        buttons=[])  # fmt: skip
                        right = gr.Image(label="Right", type="pil", interactive=False,
                                         height=440, format="png", elem_classes="lbl-img",
                                         buttons=[])  # fmt: skip
                with gr.Row(elem_classes="lbl-vote"):
                    b_left = gr.Button("⬅ Left is better  [←]", variant="primary",
                                       elem_id="lbl-left")  # fmt: skip
                    b_tie = gr.Button("Tie  [↓]", elem_id="lbl-tie")
                    b_bad = gr.Button("Both bad  [↑]", elem_id="lbl-bad")
                    b_right = gr.Button("Right is better  [→] ➡", variant="primary",
                                        elem_id="lbl-right")  # fmt: skip
                with gr.Row():
                    b_skip = gr.Button("Skip  [S]", size="sm", elem_id="lbl-skip")
                    b_undo = gr.Button("↩ Undo last vote  [U]", size="sm", elem_id="lbl-undo")
                status = gr.Markdown(elem_id="lbl-status")
                gr.Markdown(
                    "Keys: <kbd>←</kbd> left is better · <kbd>→</kbd> right is better · "
                    "<kbd>↓</kbd> tie · <kbd>↑</kbd> both bad · <kbd>S</kbd> skip · <kbd>U</kbd> "
                    "undo. Answer the question shown above the pair; use Tie when you cannot "
                    "tell, Both bad when neither is acceptable."
                )
            with gr.Tab("Admin", visible=False) as admin_tab:
                with gr.Row(equal_height=True):
                    gr.Markdown("### Labeling statistics (votes not undone)", scale=5)
                    refresh = gr.Button("↻ Refresh", size="sm", scale=0, min_width=110)
                cards = gr.HTML()
                gr.Markdown("### Annotators")
                people = gr.Dataframe(
                    headers=["annotator", "votes", "left", "right", "tie", "both bad", "skip",
                             "left share", "median s", "mean s"],
                    interactive=False, wrap=True,
                )  # fmt: skip
                gr.Markdown("### Annotator quality (gold pairs, position bias, agreement)")
                team = gr.Dataframe(headers=list(QUALITY_HEADERS), interactive=False, wrap=True)
                team_note = gr.Markdown()
                gr.Markdown("### Agreement between annotators (Cohen's κ on shared pairs)")
                kappas = gr.Dataframe(
                    headers=["annotator A", "annotator B", "shared pairs", "Cohen's κ"],
                    interactive=False,
                )

            shown = [state, prompt, left, right, progress, status, top]
            private: dict[str, Any] = {"api_visibility": "private", "concurrency_limit": None}
            demo.load(self.on_load, None, [*shown, who, admin_tab], **private)
            # Votes and undo skip Gradio's queue (one POST to /gradio_api/run/..., still
            # behind the login check, the user still from the session): the keys and buttons
            # answer without waiting behind other annotators' queued events.
            direct = {**private, "queue": self.ui_queue}
            for button, choice in ((b_left, "left"), (b_right, "right"), (b_tie, "tie"),
                                   (b_bad, "both_bad"), (b_skip, "skip")):  # fmt: skip
                button.click(self._voter(choice), [state], shown, **direct)
            b_undo.click(self.on_undo, [state], shown, **direct)
            if generate_btn is not None and prompt_box is not None:
                for trigger in (generate_btn.click, prompt_box.submit):  # one queue slot
                    trigger(self.on_generate, [prompt_box], shown, api_visibility="private",
                            concurrency_limit=1, concurrency_id="generate")  # fmt: skip
            admin_out = [cards, people, kappas, team, team_note]
            refresh.click(self.on_admin, None, admin_out, **private)
            admin_tab.select(self.on_admin, None, admin_out, **private)

            fast: dict[str, Any] = {"concurrency_limit": None, "queue": self.api_queue}
            gr.api(self.api_next_pair, api_name="next_pair", **fast)
            gr.api(self.api_vote, api_name="vote", **fast)
            gr.api(self.api_undo, api_name="undo", **fast)
            gr.api(self.api_my_votes, api_name="my_votes", **fast)
            gr.api(self.admin_stats, api_name="admin_stats", **fast)
        return demo
