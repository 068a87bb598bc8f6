"""Distillation helpers: load a teacher (zoo name or checkpoint) and read configurable feature taps.

A tap is ``"features"`` (the penultimate decoder map of ``forward_train``) or the dotted name
of any submodule (e.g. ``decoder.stages.3``), whose output is captured with a forward hook.
"""

from __future__ import annotations

from pathlib import Path

import torch

from mobiledepth.errors import UserError


def load_model_ref(ref: str, with_heads: bool = True):
    """``(model, spec)`` from a zoo name / spec YAML (fresh init) or a checkpoint path (trained)."""
    from mobiledepth.arch import build_model, load_checkpoint

    path = Path(str(ref))
    if path.suffix.lower() in (".pt", ".pth"):
        if not path.is_file():
            raise UserError(f"checkpoint {ref} does not exist; check the path")
        # trained heads load with the rest; a checkpoint saved without them (an export) gets fresh ones
        model, spec, _ = load_checkpoint(path, with_heads=with_heads, fresh_heads=True)
        return model, spec
    model = build_model(ref, with_heads=with_heads)
    return model, model.spec


def check_tap(model: torch.nn.Module, tap: str, role: str) -> None:
    """Fail early, naming valid choices, when a tap does not exist in the model."""
    if tap == "features":
        return
    try:
        model.get_submodule(tap)
    except AttributeError:
        names = [n for n, _ in model.named_modules() if n.startswith("decoder")][:8]
        raise UserError(f"{role} feature tap '{tap}' is not a submodule; use 'features' or e.g. {', '.join(names)}") from None


def forward_with_tap(model: torch.nn.Module, x: torch.Tensor, tap: str = "features"):
    """``(DepthPrediction, tapped feature map)`` of one ``forward_train`` pass."""
    if tap == "features":
        prediction = model.forward_train(x)
        return prediction, prediction.features
    captured: list[torch.Tensor] = []
    handle = model.get_submodule(tap).register_forward_hook(lambda _m, _i, out: captured.append(out))
    try:
        prediction = model.forward_train(x)
    finally:
        handle.remove()
    feature = captured[-1]
    if not isinstance(feature, torch.Tensor):
        raise UserError(f"feature tap '{tap}' does not output a tensor; choose a conv/block module")
    return prediction, feature


class Teacher:
    """A frozen teacher in eval mode: ``teacher(x) -> (depth, features)`` without gradients."""

    def __init__(self, ref: str, tap: str = "features") -> None:
        self.model, self.spec = load_model_ref(ref)
        self.model.eval()
        for param in self.model.parameters():
            param.requires_grad_(False)
        check_tap(self.model, tap, "teacher")
        self.tap = tap
        self.ref = ref

    @torch.no_grad()
    def __call__(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        prediction, feature = forward_with_tap(self.model, x, self.tap)
        return prediction.depth, feature
