"""mmalign/adapters.py: the cheap adapter switch for reference passes."""

from __future__ import annotations

import torch
from peft import LoraConfig, get_peft_model

from mmalign.adapters import AdapterSwitch, adapter_layers, flag_switches


def _lora_mlp() -> torch.nn.Module:
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3))
    model = get_peft_model(net, LoraConfig(r=2, target_modules=["0", "2"]))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_()  # LoRA starts as the identity: move it so off differs from on
    return model


def _grads(model: torch.nn.Module) -> dict[str, bool]:
    return {n: p.requires_grad for n, p in model.named_parameters()}


def test_off_gives_the_base_output_with_and_without_autograd():
    model, x = _lora_mlp(), torch.randn(4, 6)
    with torch.no_grad(), model.disable_adapter():
        base = model(x)
    policy = model(x).detach()
    assert not torch.allclose(base, policy)
    switch, before = AdapterSwitch(), _grads(model)
    with torch.no_grad(), switch.off(model):  # the flag-only path: requires_grad untouched
        torch.testing.assert_close(model(x), base, rtol=0, atol=0)
        assert _grads(model) == before
    with switch.off(model):  # autograd on: PEFT's own per-layer call turns LoRA grads off
        torch.testing.assert_close(model(x).detach(), base, rtol=0, atol=0)
        assert not any(p.requires_grad for n, p in model.named_parameters() if "lora_" in n)
    torch.testing.assert_close(model(x).detach(), policy, rtol=0, atol=0)
    assert _grads(model) == before
    assert all(layer.disable_adapters is False for layer in adapter_layers(model))


def test_a_layer_whose_flag_does_not_switch_falls_back_to_peft():
    model, x = _lora_mlp(), torch.randn(4, 6)
    layers = adapter_layers(model)
    assert flag_switches(layers)

    class Renamed(type(layers[0])):  # a PEFT whose forward reads another attribute
        @property
        def disable_adapters(self) -> bool:
            return bool(getattr(self, "_adapters_off", False))

        def enable_adapters(self, enabled: bool) -> None:
            self._adapters_off = not enabled

    layers[0].__class__ = Renamed
    assert not flag_switches(adapter_layers(model))
    with torch.no_grad():
        with AdapterSwitch().off(model):
            off = model(x)
        layers[0]._adapters_off = True
        layers[1]._disable_adapters = True
        expected = model(x)
        layers[0]._adapters_off, layers[1]._disable_adapters = False, False
    torch.testing.assert_close(off, expected, rtol=0, atol=0)


def test_the_flag_is_restored_after_an_error_and_a_disabled_layer_falls_back():
    model, x = _lora_mlp(), torch.randn(4, 6)
    policy = model(x).detach()
    switch = AdapterSwitch()
    try:
        with torch.no_grad(), switch.off(model):
            raise RuntimeError("boom")
    except RuntimeError:
        pass
    torch.testing.assert_close(model(x).detach(), policy, rtol=0, atol=0)
    layers = adapter_layers(model)
    layers[0].enable_adapters(False)  # a layer that starts off: the flag check says no
    assert not flag_switches(layers)
    assert layers[0].disable_adapters is True and layers[1].disable_adapters is False
