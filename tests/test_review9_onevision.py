"""LLaVA-OneVision (llava-hf/llava-onevision-qwen2-*-ov-hf, PPD's encoder in configs/sdxl/ppd.yaml)
on a tiny random copy saved and loaded back like the real checkpoints (`tiny_llava_onevision`).

Its processor tiles an image shown alone (anyres: more tokens for a larger or longer image, an
`image_newline` after each row of features) and lays out an image among others as its base
tile; its hub chat template writes a turn's images first, side by side, and opens the
assistant turn with "assistant " where the generation prompt is "assistant\\n". Before:
- every training row was refused: the turn did not continue the generation prompt
  ("template_changes_prompt");
- a prompt of several images failed to score: the scorer tiled each image its processor had
  laid out as a base tile;
- the user encoder's contrast poolings found one run of image tokens for all of a user's
  images, and every image was tiled as if alone (the images went to the processor as one flat
  list), so `contrast_tokens` found images of different token counts;
- generation tiled each image of a prompt of several, where training scores their base tiles;
- the loader warned that the family was untested.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
import torch
from PIL import Image
from test_vlm_train import vlm_config

from mmalign.data.schema import write_pairs
from mmalign.train.loop import train
from mmalign.vlm import load
from mmalign.vlm.chat_format import ChatFormat
from mmalign.vlm.collate import PairCollator, row_images
from mmalign.vlm.load import load_vlm
from mmalign.vlm.recipe import VLMRecipe
from mmalign.vlm.scorer import _core, image_features, sequence_logps
from mmalign.vlm.tiny import tiny_llava_onevision
from mmalign.vlm.user_embed import embed_users

# (height, width): 1x1 to 2x2 tiles of 16 pixels after anyres, some unpadded
SIZES = [(16, 16), (32, 16), (16, 40), (40, 40), (9, 23)]
BASE_TOKENS = 16 + 1  # a base tile of 4x4 patches and its image_newline


def _image(size: tuple[int, int], seed: int) -> Image.Image:
    pixels = np.random.default_rng(seed).random((*size, 3)) * 255
    return Image.fromarray(pixels.astype("uint8"))


@pytest.fixture(scope="module")
def onevision(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("onevision") / "model"
    tiny_llava_onevision(folder)
    return folder


@pytest.fixture(scope="module")
def vlm(onevision):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return load_vlm(str(onevision))


def _image_tokens(vlm, text: str, images: list) -> int:
    ids = vlm.processor(text=[text], images=images, return_tensors="pt")["input_ids"]
    return int((ids == vlm.model.config.image_token_id).sum())


def test_loads_as_a_tested_family_and_tiles_by_image_size(onevision, monkeypatch):
    monkeypatch.setattr(load, "_WARNED", set())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        vlm = load_vlm(str(onevision))
    assert not [w for w in caught if "not one mmalign is tested on" in str(w.message)]
    assert vlm.family == "llava_onevision" and type(vlm.core).__name__.startswith("LlavaOnevision")
    user = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "what?"}]}]
    text = vlm.processor.apply_chat_template(user, add_generation_prompt=True)
    alone = [_image_tokens(vlm, text, [_image(s, i)]) for i, s in enumerate(SIZES)]
    assert len(set(alone)) >= 3 and min(alone) > BASE_TOKENS  # anyres: the count follows size
    two = [{"role": "user", "content": [{"type": "image"}, {"type": "image"},
                                        {"type": "text", "text": "what?"}]}]  # fmt: skip
    text = vlm.processor.apply_chat_template(two, add_generation_prompt=True)
    assert _image_tokens(vlm, text, [[_image(SIZES[3], 0), _image(SIZES[1], 1)]]) == 2 * BASE_TOKENS


def test_the_answer_is_scored_after_the_generation_prompt(vlm):
    """The hub template opens the assistant turn with "assistant " (a space), its generation
    prompt with "assistant\\n": the answer and its end of turn follow the generation prompt,
    as the model generates them."""
    rendered = ChatFormat(vlm.processor).render("what color is the shape?", 1, ["red circle"])
    assert rendered.prompt == (
        "<|im_start|>user <image>\nwhat color is the shape?<|im_end|><|im_start|>assistant\n"
    )
    assert rendered.completions == {"red circle": "red circle<|im_end|>"}


def _rows() -> list[dict]:
    a, b, c = (_image(s, i) for i, s in enumerate(SIZES[:3]))
    return [
        {"prompt": "what color is the shape?", "image": a, "chosen": "red circle",
         "rejected": "blue"},
        {"prompt": "is there a star?", "image": b, "chosen": "yes", "rejected": "no"},
        # `a` again, among others: its base tile, another vision unit than `a` alone
        {"prompt": "<image> and <image>: which is red?", "images": [c, a],
         "chosen": "the first", "rejected": "none"},
    ]  # fmt: skip


def _plain_logps(vlm, collator: PairCollator, rows: list[dict], batch) -> list[float]:
    """Each sequence's completion log-prob from one plain forward of the processor's inputs."""
    out = []
    for r, _, completion in batch.sequence_keys:
        shown = row_images(rows[r])
        prompt = collator.format.render(rows[r]["prompt"], len(shown), []).prompt
        inputs = vlm.processor(text=[prompt + completion], images=[shown], return_tensors="pt")
        with torch.no_grad():
            logits = vlm.model(**inputs).logits[0, :-1].float()
        ids = inputs["input_ids"][0, 1:]
        token = logits.log_softmax(-1).gather(-1, ids[:, None])[:, 0]
        out.append(float(token[-len(collator.format.completion_ids(completion)) :].sum()))
    return out


@pytest.mark.parametrize("which", [[0, 1, 2], [1, 3]], ids=["alone_and_among", "one_among"])
def test_scores_equal_a_plain_forward(vlm, which):
    """Images of several sizes alone, and images among others (`a` both ways in one batch; a
    prompt showing one image twice: a lone unit among others), score as the model's own
    forward of the processor's inputs scores them."""
    rows = _rows()
    rows.append({**rows[1], "prompt": "<image> or <image>?", "images": [rows[1]["image"]] * 2})
    rows = [rows[i] for i in which]
    collator = PairCollator(vlm.processor)
    batch = collator(rows)
    core = _core(vlm.model)
    with torch.no_grad():
        features = image_features(core, batch)
        logps, _ = sequence_logps(core, batch, features)
    sizes = sorted(int(f.shape[0]) for f in features)
    assert BASE_TOKENS in sizes and (which == [1, 3] or max(sizes) > BASE_TOKENS)
    plain = _plain_logps(vlm, collator, rows, batch)
    torch.testing.assert_close(logps, torch.tensor(plain), atol=1e-4, rtol=1e-5)


def _users() -> dict[str, list]:
    """Three users of two examples each, their images of different sizes."""
    return {f"u{u}": [(f"prompt {k}", _image(SIZES[(u + k) % 5], 10 * u + k),
                       _image(SIZES[(u + k + 2) % 5], 10 * u + k + 5)) for k in range(2)]
            for u in range(3)}  # fmt: skip


def test_user_embeddings_pool_each_image_once(vlm):
    """A user's images are base tiles of 17 tokens each, whatever their size, side by side in
    the prompt: `contrast` pools each image's own tokens (checked against a direct computation)
    and `contrast_tokens` is 17 x hidden wide; batching changes nothing."""
    from mmalign.vlm.user_embed import few_shot_conversation

    users = _users()
    hidden = vlm.core.config.text_config.hidden_size
    for pooling, width in (("mean", hidden), ("contrast", hidden),
                           ("contrast_tokens", BASE_TOKENS * hidden)):  # fmt: skip
        batched = embed_users(vlm, users, shots=2, pooling=pooling, batch_size=3)
        alone = embed_users(vlm, {"u1": users["u1"]}, shots=2, pooling=pooling, batch_size=1)
        assert batched["u1"].shape == (width,)
        torch.testing.assert_close(alone["u1"], batched["u1"], atol=1e-4, rtol=1e-4)
        assert (batched["u0"] - batched["u1"]).abs().max() > 1e-4

    messages, images = few_shot_conversation(users["u2"])
    text = vlm.processor.apply_chat_template(messages, add_generation_prompt=True)
    inputs = vlm.processor(text=[text], images=[images], return_tensors="pt")
    with torch.no_grad():
        h = vlm.model(**inputs, output_hidden_states=True).hidden_states[-2][0]
    pos = (inputs["input_ids"][0] == vlm.model.config.image_token_id).nonzero().flatten()
    assert pos.numel() == 4 * BASE_TOKENS and int(pos[-1] - pos[0]) == pos.numel() - 1  # one run
    means = torch.stack([h[p].mean(0) for p in pos.split(BASE_TOKENS)])
    expected = (means[0::2] - means[1::2]).mean(0)
    got = embed_users(vlm, {"u2": users["u2"]}, shots=2, pooling="contrast")["u2"]
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


class _Capturing(VLMRecipe):
    """The recipe, recording its trained policy's logits on `probe` as it saves the adapter."""

    probe: ClassVar[dict] = {}
    logits: ClassVar[list[torch.Tensor]] = []

    def save(self, output_dir: Path):
        self.model.eval()
        with torch.no_grad():
            _Capturing.logits.append(self.model(**_Capturing.probe).logits)
        return super().save(output_dir)


def test_a_lora_dpo_run_saves_an_adapter_peft_reloads(onevision, vlm, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForImageTextToText

    rows = [{"prompt": q, "image": _image(SIZES[i % 5], i), "chosen": c, "rejected": r}
            for i, (q, c, r) in enumerate([("what color is the shape?", "red", "blue square"),
                                           ("is there a star?", "yes", "no")] * 4)]  # fmt: skip
    write_pairs(rows, tmp_path / "pairs", "text")
    user = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "what?"}]}]
    text = vlm.processor.apply_chat_template(user, add_generation_prompt=True)
    _Capturing.probe = dict(vlm.processor(text=[text], images=[_image(SIZES[2], 7)],
                                          return_tensors="pt"))  # fmt: skip
    cfg = vlm_config(tmp_path / "run", model={"name_or_path": str(onevision)},
                     data={"path": str(tmp_path / "pairs"), "toy": None},
                     train={"max_steps": 2, "learning_rate": 1e-2})  # fmt: skip
    result = train(cfg, _Capturing)
    folder = Path(result.saved["path"])
    assert result.saved["kind"] == "peft_adapter" and (folder / "adapter_config.json").is_file()
    base = AutoModelForImageTextToText.from_pretrained(onevision).eval()
    tuned = PeftModel.from_pretrained(base, str(folder)).eval()
    with torch.no_grad():
        logits = tuned(**_Capturing.probe).logits
        with tuned.disable_adapter():
            before = tuned(**_Capturing.probe).logits
    torch.testing.assert_close(logits, _Capturing.logits[-1], atol=1e-5, rtol=1e-5)
    assert (logits - before).abs().max() > 1e-4  # the adapter trained


def test_greedy_answers_and_chat(onevision, vlm, tmp_path, capsys):
    from mmalign.cli import main
    from mmalign.vlm.evaluate import answer_rows

    rows = [{"prompt": "what color is the shape?", "image": _image(s, i)}
            for i, s in enumerate(SIZES)]  # fmt: skip
    together = answer_rows(vlm, rows, batch_size=5, max_new_tokens=4)
    one_by_one = answer_rows(vlm, rows, batch_size=1, max_new_tokens=4)
    assert together == one_by_one and all(isinstance(a, str) for a in together)
    _image(SIZES[4], 4).save(tmp_path / "x.png")  # rows[4]'s image
    code = main(["chat", str(onevision), "--prompt", "what color is the shape?",
                 "--image", str(tmp_path / "x.png"), "--max-new-tokens", "4"])  # fmt: skip
    assert code == 0 and capsys.readouterr().out.strip() == together[4]


def test_a_prompt_of_several_images_generates_as_it_is_scored(vlm, monkeypatch):
    """Generation lays out a prompt's images as the collator does (base tiles, not each tiled
    as if alone): the model answers the prompt that training scores."""
    from mmalign.vlm.evaluate import answer_rows

    row = _rows()[2]
    batch = PairCollator(vlm.processor)([row])
    prompt = batch.input_ids[0][~batch.completion_mask[0] & batch.attention_mask[0].bool()]
    seen = []
    real = vlm.model.generate

    def spy(**kwargs):
        seen.append(kwargs["input_ids"][0])
        return real(**kwargs)

    monkeypatch.setattr(vlm.model, "generate", spy)
    answer_rows(vlm, [row], max_new_tokens=2)
    assert seen[0].tolist() == prompt.tolist()
