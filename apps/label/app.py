"""The Gradio labeling app: two images side by side, the annotator picks one.

Identity always comes from the logged-in session (`gr.Request.username`, Gradio's
`auth=` against the users file); no function takes a user name from the client. Every
vote carries an id: the UI makes one when it shows a pair (a double submit of that pair
is stored once), API clients send their own (a retried request is stored once).

API (through `gradio_client`, logged in): `next_pair() -> {pair_id, prompt, left_image}`,
`vote(vote_id, pair_id, choice, left_image, decide_ms) -> {status, vote_id, pair_id,
annotator, next}` (`next`: the caller's next pair, so a client needs one call per vote),
`undo() -> {pair_id}`, `my_votes() -> [..]` (the caller's own votes only),
`admin_stats()` (admins only).

The fast path, outside Gradio's queue (`fast_routes.py`): `POST /label_api/vote` with the
same fields as JSON and `GET /label_api/next_pair`, on the same login session cookie.
"""

from __future__ import annotations

import html
import os
import random
import secrets
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import gradio as gr

from .images import ImageError, encode_png, load_image, save_image
from .stats import summarize
from .store import Pair, Store, VoteError, pair_id_for
from .users import Authenticator

KEYS_JS = """
<script>
(() => {
  const keys = {ArrowLeft: "lbl-left", ArrowRight: "lbl-right", ArrowDown: "lbl-tie",
                s: "lbl-skip", S: "lbl-skip", u: "lbl-undo", U: "lbl-undo"};
  document.addEventListener("keydown", (event) => {
    const tag = (event.target.tagName || "").toLowerCase();
    if (tag === "input" || tag === "textarea" || event.target.isContentEditable) return;
    if (event.ctrlKey || event.metaKey || event.altKey || event.repeat) return;
    const id = keys[event.key];
    if (!id) return;
    const button = document.getElementById(id);
    if (button && !button.disabled) { event.preventDefault(); button.click(); }
  });
})();
</script>
"""

CSS = """
.gradio-container { max-width: 1400px !important; margin: auto; }
#lbl-header { display: flex; align-items: center; gap: 18px; }
#lbl-prompt { font-size: 1.55rem; line-height: 1.35; font-weight: 600; text-align: center;
  padding: 14px 18px; border-radius: 12px; background: var(--block-background-fill);
  border: 1px solid var(--border-color-primary); }
#lbl-prompt .lbl-muted { font-size: 0.95rem; font-weight: 400; opacity: 0.65; display: block; }
.lbl-progress { width: 100%; }
.lbl-progress .lbl-bar { height: 12px; border-radius: 6px; background: var(--neutral-200);
  overflow: hidden; }
.lbl-progress .lbl-fill { height: 100%; background: linear-gradient(90deg, #6366f1, #22c55e);
  transition: width 0.25s ease; }
.lbl-progress .lbl-text { font-size: 0.9rem; margin-top: 4px; opacity: 0.8; }
.lbl-img img { object-fit: contain !important; image-rendering: pixelated; }
.lbl-vote button { font-size: 1.1rem !important; min-height: 56px; }
kbd { border: 1px solid #9ca3af; border-bottom-width: 2px; border-radius: 4px;
  padding: 0 6px; font-family: ui-monospace, monospace; font-size: 0.85em;
  background: rgba(127,127,127,0.12); }
#lbl-status { min-height: 1.6em; text-align: center; }
"""


def _progress_html(done: int, total: int) -> str:
    share = 100.0 * done / total if total else 100.0  # an empty queue reads as finished
    return (
        f'<div class="lbl-progress" data-done="{done}" data-total="{total}">'
        f'<div class="lbl-bar"><div class="lbl-fill" style="width:{share:.1f}%"></div></div>'
        f'<div class="lbl-text">{done} of {total} pairs in your queue</div></div>'
    )


# The bar before the page knows the queue: empty, not "0 of 0" (a full bar). Gradio patches
# the HTML in place, so the fill keeps its element and the CSS transition animates every
# width change: a full placeholder swept down to 0 on load and back up on the first votes.
_PROGRESS_LOADING = (
    '<div class="lbl-progress"><div class="lbl-bar"><div class="lbl-fill" style="width:0%">'
    '</div></div><div class="lbl-text">Loading your queue …</div></div>'
)


def _prompt_html(prompt: str | None, note: str = "", pair_id: str = "") -> str:
    if prompt is None:
        return f'<div id="lbl-prompt">{html.escape(note or "Nothing left to label")}</div>'
    muted = f'<span class="lbl-muted">{html.escape(note)}</span>' if note else ""
    # the shown pair's id (not secret: the API hands it out): the page says which pair it shows
    shown = html.escape(pair_id, quote=True)
    return f'<div id="lbl-prompt" data-pair-id="{shown}">{muted}{html.escape(prompt)}</div>'


def _user(request: gr.Request | None) -> str:
    name = getattr(request, "username", None)
    if not name:  # Gradio's auth guards every route; this guards a misconfigured launch
        raise gr.Error("not logged in")
    return str(name)


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
    ) -> None:
        self.store = store
        self.image_root = Path(image_root)
        self.image_root.mkdir(parents=True, exist_ok=True)
        self.auth = auth
        self.model_name = model
        self.steps = steps  # sampler steps in --model mode (default: the model card's)
        self._model: Any = None
        self._model_lock = threading.Lock()
        self._rng = random.Random(seed)
        self._rng_lock = threading.Lock()
        self.api_queue = os.environ.get("MMALIGN_LABEL_API_QUEUE", "1") == "1"
        # "1" puts the page's vote/undo events back on Gradio's queue (for comparisons)
        self.ui_queue = os.environ.get("MMALIGN_LABEL_UI_QUEUE", "0") == "1"

    # ------------------------------------------------------------------ helpers

    def _coin(self) -> int:
        with self._rng_lock:
            return self._rng.randrange(2)

    def _show(self, user: str, pair: Pair | None, note: str = "") -> tuple[Any, ...]:
        """Outputs for the page: state, prompt, left image, right image, progress, status."""
        done, total = self.store.progress(user)
        if pair is None:
            empty = (
                "Your queue is done. Thank you!"
                if not self.model_name
                else ("Type a prompt and press Generate to get two images to compare.")
            )
            return ({}, _prompt_html(None, empty), None, None, _progress_html(done, total), note)
        left = self._coin()
        refs = (pair.image_0, pair.image_1)
        try:
            images = [load_image(self.image_root, refs[left]),
                      load_image(self.image_root, refs[1 - left])]  # fmt: skip
        except ImageError as err:
            return ({}, _prompt_html(pair.prompt, pair_id=pair.pair_id), None, None,
                    _progress_html(done, total),
                    f"⚠️ cannot show pair {pair.pair_id}: {err}")  # fmt: skip
        state = {
            "pair_id": pair.pair_id,
            "left_image": left,
            "vote_id": uuid.uuid4().hex,  # one id per shown pair: a double submit counts once
            "shown_at": time.monotonic(),
        }
        return (state, _prompt_html(pair.prompt, pair_id=pair.pair_id), images[0], images[1],
                _progress_html(done, total), note)  # fmt: skip

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
        ms = int(1000 * (time.monotonic() - state["shown_at"]))
        try:
            ack = self.store.record_vote(
                vote_id=state["vote_id"], annotator=user, pair_id=state["pair_id"],
                choice=choice, left_image=state["left_image"], decide_ms=ms,
            )  # fmt: skip
        except VoteError as err:
            return self._show(user, self.store.next_pair(user), f"⚠️ {err}")
        note = {"left": "Left", "right": "Right", "tie": "Tie", "skip": "Skipped"}[choice]
        saved = "saved" if ack.status == "stored" else "already saved"
        return self._show(user, self.store.next_pair(user), f"✓ {note} {saved} ({ms / 1000:.1f} s)")

    def _voter(self, choice: str) -> Any:
        def vote(state: dict[str, Any], request: gr.Request) -> tuple[Any, ...]:
            return self.on_vote(choice, state, request)

        vote.__name__ = f"ui_{choice}"  # keeps the API name `vote` for `api_vote`
        return vote

    def on_undo(self, state: dict[str, Any], request: gr.Request) -> tuple[Any, ...]:
        user = _user(request)
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
        pair = self.generate_pair(prompt)
        return self._show(user, pair, f"Two images from {self.model_name} (different seeds).")

    def generate_pair(self, prompt: str) -> Pair:
        """Generate two images for `prompt` with two random seeds and store them as a pair."""
        from mmalign.data.schema import to_pil_image
        from mmalign.diffusion import load_pipeline
        from mmalign.diffusion.sample import generate, sampling_defaults

        with self._model_lock:  # one generation at a time: the model is not thread-safe
            if self._model is None:
                name = "toy:sd" if self.model_name in (None, "toy-sd") else self.model_name
                self._model = load_pipeline(name)
            steps, guidance = sampling_defaults(self._model, self.steps, None)
            seed = secrets.randbelow(2**31 - 2)
            images = generate(self._model.pipe, [prompt, prompt], seed=seed, steps=steps,
                              guidance=guidance, batch_size=2, desc="label")  # fmt: skip
        data = [encode_png(to_pil_image(img)) for img in images]
        refs = [save_image(self.image_root, d, f"generated image {i}") for i, d in enumerate(data)]
        pair = Pair(pair_id_for(prompt, *data), prompt, refs[0], refs[1],
                    f"model:{self.model_name}:seeds {seed},{seed + 1}")  # fmt: skip
        self.store.add_pairs([pair])
        return pair

    def on_admin(self, request: gr.Request) -> tuple[Any, ...]:
        stats = self.admin_stats(request)
        people = [[a["annotator"], a["votes"], a["left"], a["right"], a["tie"], a["skip"],
                   _fmt(a["left_share"], "{:.1%}"), _fmt(a["median_s"], "{:.2f}"),
                   _fmt(a["mean_s"], "{:.2f}")] for a in stats["annotators"]]  # fmt: skip
        kappas = [
            [c["annotator_a"], c["annotator_b"], c["shared"], _fmt(c["cohen_kappa"], "{:.3f}")]
            for c in stats["cohen"]
        ]
        cards = (
            f"<div class='lbl-cards'>"
            f"<div><b>{stats['votes']}</b><span>votes</span></div>"
            f"<div><b>{len(stats['annotators'])}</b><span>annotators</span></div>"
            f"<div><b>{_fmt(stats['fleiss_kappa'], '{:.3f}')}</b><span>Fleiss' κ "
            f"({stats['overlapping_pairs']} overlapping pairs)</span></div>"
            f"<div><b>{_fmt(stats['left_share'], '{:.1%}')}</b><span>left votes "
            f"(position bias; 50% = none)</span></div>"
            f"<div><b>{_fmt(stats['median_s'], '{:.2f} s')}</b><span>median time per vote</span>"
            f"</div></div>"
        )
        return cards, people, kappas

    # --------------------------------------------------------------------- API

    def api_next_pair(self, request: gr.Request) -> dict[str, Any]:
        """The caller's next pair and a random left image (0 or 1); {} when the queue is empty."""
        return self.next_for(_user(request))

    def api_vote(
        self, vote_id: str, pair_id: str, choice: str, left_image: int, decide_ms: int,
        request: gr.Request,
    ) -> dict[str, Any]:  # fmt: skip
        """Store the caller's vote; returns only after the vote is committed."""
        user = _user(request)
        try:
            ack = self.store.record_vote(
                vote_id=vote_id, annotator=user, pair_id=pair_id, choice=choice,
                left_image=int(left_image), decide_ms=int(decide_ms),
            )  # fmt: skip
        except VoteError as err:
            raise gr.Error(str(err)) from err
        # the next pair in the same reply: one round trip per vote instead of two
        return {"status": ack.status, "vote_id": ack.vote_id, "pair_id": ack.pair_id,
                "annotator": ack.annotator, "next": self.next_for(user)}  # fmt: skip

    def next_for(self, user: str) -> dict[str, Any]:
        """`user`'s next pair as plain data ({} when the queue is empty); `user` is the
        authenticated session's name, never a name the client sent."""
        pair = self.store.next_pair(user)
        if pair is None:
            return {}
        return {"pair_id": pair.pair_id, "prompt": pair.prompt, "left_image": self._coin()}

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
            raise gr.Error("admin only")
        return summarize(self.store.all_votes())

    # ------------------------------------------------------------------- layout

    def build(self) -> gr.Blocks:
        with gr.Blocks(title="mmalign · label") as demo:
            state = gr.State({})
            with gr.Tab("Label"):
                with gr.Row(equal_height=True):
                    gr.Markdown("### mmalign · which image is better?", scale=3)
                    who = gr.Markdown(scale=2)
                    gr.Button("Log out", link="/logout", size="sm", scale=0, min_width=90)
                progress = gr.HTML(_PROGRESS_LOADING)
                prompt_box = None
                generate_btn = None
                if self.model_name:
                    with gr.Row(equal_height=True):
                        prompt_box = gr.Textbox(placeholder="Type a prompt, e.g. 'a red circle "
                                                "on a blue background'", show_label=False,
                                                scale=5, max_length=500)  # fmt: skip
                        generate_btn = gr.Button("Generate", variant="primary", scale=1)
                prompt = gr.HTML(_prompt_html(None, "Loading ..."))
                with gr.Row(equal_height=True):
                    left = gr.Image(label="Left", type="pil", interactive=False, height=440,
                                    format="png", elem_classes="lbl-img", buttons=[])  # fmt: skip
                    right = gr.Image(label="Right", type="pil", interactive=False, height=440,
                                     format="png", elem_classes="lbl-img", buttons=[])  # fmt: skip
                with gr.Row(elem_classes="lbl-vote"):
                    b_left = gr.Button("⬅ Left is better  [←]", variant="primary",
                                       elem_id="lbl-left")  # fmt: skip
                    b_tie = gr.Button("Tie  [↓]", elem_id="lbl-tie")
                    b_right = gr.Button("Right is better  [→] ➡", variant="primary",
                                        elem_id="lbl-right")  # fmt: skip
                with gr.Row():
                    b_skip = gr.Button("Skip  [S]", size="sm", elem_id="lbl-skip")
                    b_undo = gr.Button("↩ Undo last vote  [U]", size="sm", elem_id="lbl-undo")
                status = gr.Markdown(elem_id="lbl-status")
                gr.Markdown(
                    "Keys: <kbd>←</kbd> left is better · <kbd>→</kbd> right is better · "
                    "<kbd>↓</kbd> tie · <kbd>S</kbd> skip · <kbd>U</kbd> undo. Judge the image "
                    "that matches the prompt better; use Tie when you cannot tell."
                )
            with gr.Tab("Admin", visible=False) as admin_tab:
                with gr.Row(equal_height=True):
                    gr.Markdown("### Labeling statistics (votes not undone)", scale=5)
                    refresh = gr.Button("↻ Refresh", size="sm", scale=0, min_width=110)
                cards = gr.HTML()
                gr.Markdown("### Annotators")
                people = gr.Dataframe(
                    headers=["annotator", "votes", "left", "right", "tie", "skip",
                             "left share", "median s", "mean s"],
                    interactive=False, wrap=True,
                )  # fmt: skip
                gr.Markdown("### Agreement between annotators (Cohen's κ on shared pairs)")
                kappas = gr.Dataframe(
                    headers=["annotator A", "annotator B", "shared pairs", "Cohen's κ"],
                    interactive=False,
                )

            shown = [state, prompt, left, right, progress, status]
            private: dict[str, Any] = {"api_visibility": "private", "concurrency_limit": None}
            demo.load(self.on_load, None, [*shown, who, admin_tab], **private)
            # Votes and undo skip Gradio's queue (one POST to /gradio_api/run/..., still
            # behind the login check, the user still from the session): the keys and buttons
            # answer without waiting behind other annotators' queued events.
            direct = {**private, "queue": self.ui_queue}
            for button, choice in ((b_left, "left"), (b_right, "right"), (b_tie, "tie"),
                                   (b_skip, "skip")):  # fmt: skip
                button.click(self._voter(choice), [state], shown, **direct)
            b_undo.click(self.on_undo, [state], shown, **direct)
            if generate_btn is not None and prompt_box is not None:
                for trigger in (generate_btn.click, prompt_box.submit):
                    trigger(self.on_generate, [prompt_box], shown, api_visibility="private",
                            concurrency_limit=1)  # fmt: skip
            admin_out = [cards, people, kappas]
            refresh.click(self.on_admin, None, admin_out, **private)
            admin_tab.select(self.on_admin, None, admin_out, **private)

            fast: dict[str, Any] = {"concurrency_limit": None, "queue": self.api_queue}
            gr.api(self.api_next_pair, api_name="next_pair", **fast)
            gr.api(self.api_vote, api_name="vote", **fast)
            gr.api(self.api_undo, api_name="undo", **fast)
            gr.api(self.api_my_votes, api_name="my_votes", **fast)
            gr.api(self.admin_stats, api_name="admin_stats", **fast)
        return demo

    def launch(self, host: str = "127.0.0.1", port: int = 7860, **kwargs: Any) -> None:
        """Serve the app with uvicorn: the Gradio UI mounted at `/` of a small FastAPI app
        that also carries the fast vote routes (`fast_routes.py`). On the outer app a vote
        skips the Gradio app's middleware stack and route table: 1.8-2.7 ms of server CPU
        per vote instead of 3.1-3.4 ms with the routes added to Gradio's own app (32
        annotators back to back, `benchmarks/label_load.py`'s fast client)."""
        import uvicorn
        from fastapi import FastAPI

        from .fast_routes import add_fast_routes

        demo = self.build()
        demo.queue(default_concurrency_limit=None, max_size=None)
        app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)
        add_fast_routes(app, self)
        gr.mount_gradio_app(
            app, demo, path="/", server_name=host, server_port=port, auth=self.auth,
            auth_message="mmalign labeling: sign in with the account your admin made for you.",
            css=CSS + ADMIN_CSS, head=KEYS_JS, show_error=True, ssr_mode=False,
            max_file_size="20mb", footer_links=[], **kwargs,
        )  # fmt: skip
        uvicorn.run(app, host=host, port=port, log_level="warning")


ADMIN_CSS = """
.lbl-cards { display: grid; grid-template-columns: repeat(5, 1fr); gap: 12px; margin: 6px 0 4px; }
.lbl-cards div { border: 1px solid var(--border-color-primary); border-radius: 12px;
  padding: 12px 14px; background: var(--block-background-fill); }
.lbl-cards b { display: block; font-size: 1.6rem; }
.lbl-cards span { font-size: 0.85rem; opacity: 0.75; }
"""


def _fmt(value: float | None, spec: str) -> str:
    return "–" if value is None else spec.format(value)
