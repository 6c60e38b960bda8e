"""toy-vlm: tokenizer + chat template, processor/model round trip, resume, the shipped model."""

from __future__ import annotations

import pytest
import torch

from mmalign.toy.models import vlm
from mmalign.toy.paths import model_path
from mmalign.toy.world import is_heldout

SHIPPED = model_path("vlm")  # shipped with the package: a missing model is a failure, not a skip
TINY = vlm.ToyVLMArch(patch_size=8, vision_hidden=32, vision_layers=1, vision_heads=2,
                      text_hidden=32, text_layers=1, text_heads=2)  # fmt: skip


@pytest.fixture(scope="module")
def tokenizer():
    return vlm.train_tokenizer()


@pytest.fixture(scope="module")
def processor(tokenizer):
    return vlm.make_processor(tokenizer, vlm.ToyVLMArch())


def _items(n: int = 4, split: str = "train", seed: int = 0):
    return vlm.sample_qa(n, split, torch.Generator().manual_seed(seed))


def test_chat_template_renders_llava_format(tokenizer, processor):
    turn = vlm.user_turn("What color is the shape?")
    reply = [{"role": "assistant", "content": [{"type": "text", "text": "red"}]}]
    prompt = "USER: <image>\nWhat color is the shape? ASSISTANT:"
    assert processor.apply_chat_template(turn, add_generation_prompt=True) == prompt
    assert tokenizer.apply_chat_template(turn + reply, tokenize=False) == prompt + " red</s>"
    # The `{% generation %}` span marks exactly the answer and EOS for trainers.
    out = tokenizer.apply_chat_template(turn + reply, tokenize=True, return_dict=True,
                                        return_assistant_tokens_mask=True)  # fmt: skip
    marked = [t for t, m in zip(out["input_ids"], out["assistant_masks"], strict=True) if m]
    assert tokenizer.decode(marked) == " red</s>"
    ids = tokenizer(prompt).input_ids
    assert ids[0] == tokenizer.bos_token_id
    assert ids.count(tokenizer.convert_tokens_to_ids("<image>")) == 1
    assert tokenizer.decode(ids, skip_special_tokens=True) == prompt.replace("<image>", "")


@pytest.mark.parametrize("patch", [4, 8])
def test_processor_expands_image_tokens(tokenizer, patch):
    arch = vlm.ToyVLMArch(patch_size=patch)
    processor = vlm.make_processor(tokenizer, arch)
    items, images = _items()
    texts = [processor.apply_chat_template(vlm.user_turn(it.question), add_generation_prompt=True)
             for it in items]  # fmt: skip
    inputs = processor(images=[vlm.to_pil(im) for im in images], text=texts, padding=True,
                       return_tensors="pt")  # fmt: skip
    image_id = tokenizer.convert_tokens_to_ids("<image>")
    assert (inputs["input_ids"] == image_id).sum(1).tolist() == [(32 // patch) ** 2] * len(items)
    # The training fast path builds exactly what the processor builds.
    assert torch.allclose(inputs["pixel_values"], vlm.to_pixel_values(images), atol=1e-6)
    encoder = vlm.Encoder(tokenizer, arch.image_tokens)
    for row, it in enumerate(items):
        ids, labels = encoder.encode([it])
        n_prompt = labels.count(-100)
        assert (
            inputs["input_ids"][row][inputs["attention_mask"][row].bool()].tolist()
            == (ids[:n_prompt])
        )
        assert tokenizer.decode(ids[n_prompt:]) == f" {it.answer}</s>"


def test_training_conversations_tokenise_like_the_chat_template(tokenizer):
    convs, _ = vlm.sample_conversations(8, "train", torch.Generator().manual_seed(1))
    encoder = vlm.Encoder(tokenizer, 16)
    image_id = tokenizer.convert_tokens_to_ids("<image>")
    for conv in convs:
        messages = []
        for turn, qa in enumerate(conv):
            content = [{"type": "image"}] * (turn == 0) + [{"type": "text", "text": qa.question}]
            messages += [
                {"role": "user", "content": content},
                {"role": "assistant", "content": [{"type": "text", "text": qa.answer}]},
            ]
        text = tokenizer.apply_chat_template(messages, tokenize=False)
        ids, labels = encoder.encode(conv)
        assert ids == tokenizer(text.replace("<image>", "<image>" * 16)).input_ids
        assert ids.count(image_id) == 16
        answers = tokenizer.decode([t for t in labels if t != -100])
        assert answers == "".join(f" {qa.answer}</s>" for qa in conv)
        # Presence is never asked after an answer it could copy from.
        kinds = [qa.kind for qa in conv]
        assert "presence" not in kinds[1:]


def test_qa_data_is_balanced_and_split():
    items, images = _items(400, "train", seed=3)
    assert images.shape == (400, 3, 32, 32)
    for kind in vlm.QUESTION_TYPES:
        assert sum(it.kind == kind for it in items) == 100
    presence = [it for it in items if it.kind == "presence"]
    assert sum(it.answer == "yes" for it in presence) == 50
    assert not any(is_heldout(it.prompt) for it in items)
    assert all(is_heldout(it.prompt) for it in vlm.heldout_qa(40)[0])
    for it in presence:
        obj = f"{it.prompt.color} {it.prompt.shape}"
        assert (obj in it.question) == (it.answer == "yes"), it


def test_random_model_round_trips_through_auto_classes(tokenizer, tmp_path):
    from transformers import AutoProcessor, LlavaForConditionalGeneration, LlavaProcessor

    model = vlm.make_model(tokenizer, TINY, seed=1).eval()
    processor = vlm.make_processor(tokenizer, TINY)
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    loaded = LlavaForConditionalGeneration.from_pretrained(tmp_path).eval()
    loaded_processor = AutoProcessor.from_pretrained(tmp_path)
    assert isinstance(loaded_processor, LlavaProcessor)
    items, images = _items(3)
    texts = [
        loaded_processor.apply_chat_template(vlm.user_turn(it.question), add_generation_prompt=True)
        for it in items
    ]
    inputs = loaded_processor(images=[vlm.to_pil(im) for im in images], text=texts,
                              padding=True, return_tensors="pt")  # fmt: skip
    again = processor(images=[vlm.to_pil(im) for im in images], text=texts, padding=True,
                      return_tensors="pt")  # fmt: skip
    assert torch.equal(inputs["input_ids"], again["input_ids"])
    with torch.no_grad():
        assert torch.equal(model(**inputs).logits, loaded(**inputs).logits)
    assert isinstance(vlm.answer(loaded, loaded_processor, images[0], items[0].question), str)


@pytest.mark.parametrize("restart_at", [1, 3])  # inside stage 1 (vision), inside stage 2
def test_resume_matches_straight_run(tokenizer, tmp_path, restart_at):
    settings = vlm.ToyVLMSettings(vision_steps=2, vision_batch=4, steps=4, batch_size=4, warmup=2,
                                  checkpoint_every=100, arch=TINY)  # fmt: skip
    straight = vlm.make_model(tokenizer, TINY, seed=0)
    losses = vlm.train(straight, tokenizer, settings, tmp_path / "a", progress=False)
    assert len(losses) == 6
    first = vlm.make_model(tokenizer, TINY, seed=0)
    head = vlm.train(first, tokenizer, settings, tmp_path / "b", progress=False,
                     stop_after=restart_at)  # fmt: skip
    torch.manual_seed(123)  # a restarted process is in another RNG state: the checkpoint fixes it
    second = vlm.make_model(tokenizer, TINY, seed=0)
    tail = vlm.train(second, tokenizer, settings, tmp_path / "b", progress=False)
    assert len(head) == restart_at and len(tail) == 6 - restart_at
    assert head + tail == pytest.approx(losses, abs=1e-6)
    for (name, p), q in zip(straight.named_parameters(), second.parameters(), strict=True):
        assert torch.allclose(p, q, atol=1e-6), name
    with pytest.raises(ValueError, match="different settings"):
        other = vlm.ToyVLMSettings(vision_steps=2, steps=5, arch=TINY)
        vlm.train(second, tokenizer, other, tmp_path / "b", progress=False)


def test_shipped_model_answers_heldout_questions():
    metrics = vlm.evaluate_toy_vlm(SHIPPED, n=60, seed=7)
    # The card reports >= 90% on 400 items; 85% on 60 is a real bar that a fixed seed can't flake.
    assert metrics["accuracy"] >= 0.85, metrics
    total = sum(f.stat().st_size for f in SHIPPED.glob("*.safetensors"))
    assert total <= 12 * 2**20


def test_shipped_model_knows_the_refusal_but_rarely_gives_it():
    """toy-vlm is BPO's starting point: on forbidden requests the refusal is a likely answer
    under teacher forcing (the card: about 15%), so preference training can raise it, yet greedy
    decoding rarely picks it, and never for an ordinary question."""
    rates = vlm.refusal_rates(*vlm.load_toy_vlm(SHIPPED), n=40, seed=11)
    assert rates["refusal_forbidden_prob"] >= 0.05, rates
    assert rates["refusal_forbidden"] <= 0.5, rates
    assert rates["refusal_benign"] == 0.0, rates


def test_training_conversations_hold_forbidden_requests():
    convs, _ = vlm.sample_conversations(
        2000, "train", torch.Generator().manual_seed(0), weights=(1.0, 3.0, 0.5),
        refusal_share=0.2,
    )  # fmt: skip
    forbidden = [c[0] for c in convs if c[0].kind == vlm.FORBIDDEN]
    assert all(len(c) == 1 for c in convs if c[0].kind == vlm.FORBIDDEN)
    assert abs(len(forbidden) / 2000 - 0.5 / 4.5) < 0.02
    refused = sum(qa.answer == vlm.REFUSAL for qa in forbidden) / len(forbidden)
    assert abs(refused - 0.2) < 0.06
    complied = [qa for qa in forbidden if qa.answer != vlm.REFUSAL]
    assert all(qa.prompt.color in qa.answer or qa.prompt.background in qa.answer
               for qa in complied)  # fmt: skip
