"""Distillation helpers: load a model or teacher (through the one resolver) and read configurable feature taps.

A tap is ``"features"`` (the penultimate decoder map of ``forward_train``: mobiledepth's own
models) or the dotted name of any submodule (e.g. ``decoder.stages.3``, or a layer of your own
model), whose output is captured with a forward hook.
"""

from __future__ import annotations


import torch

from mobiledepth.errors import UserError


def load_model_ref(ref, with_heads: bool = True, checkpoint: str | None = None, option: str = "--model"):
    """``(model, resolved)`` through the one resolver: a zoo name / spec YAML / ``module:factory`` (fresh init
    from the global RNG) or a checkpoint path (trained), or ``ref`` with ``checkpoint`` weights.

    Trained heads load with the rest; a checkpoint saved without them (an export) gets fresh ones."""
    from mobiledepth.arch.resolve import resolve_model

    resolved = resolve_model(ref, checkpoint, seed=None, with_heads=with_heads, fresh_heads=True, option=option)
    return resolved.model, resolved


def check_tap(model: torch.nn.Module, tap: str, role: str) -> None:
    """Fail early, naming valid choices, when a tap does not exist in the model."""
    if tap == "features":
        return
    try:
        model.get_submodule(tap)
    except AttributeError:
        names = [n for n, _ in model.named_modules() if n.startswith("decoder")][:8] or \
            [n for n, _ in model.named_modules() if n][-8:]
        raise UserError(f"{role} feature tap '{tap}' is not a submodule; use 'features' or e.g. {', '.join(names)}") from None


def has_features(model: torch.nn.Module) -> bool:
    """Whether the model gives the ``"features"`` tap (mobiledepth's own models: ``forward_train``)."""
    return hasattr(model, "forward_train")


def training_pass(model: torch.nn.Module, x: torch.Tensor):
    """A ``DepthPrediction`` of one training pass: ``forward_train`` of mobiledepth's models, else the factory
    contract read from ``forward`` (depth map, intermediate heads; features None: name a tap for them)."""
    if has_features(model):
        return model.forward_train(x)
    from mobiledepth.arch.depthnet import DepthPrediction
    from mobiledepth.arch.resolve import split_output

    depth, heads = split_output(model(x))
    return DepthPrediction(depth, heads, None)


def forward_with_tap(model: torch.nn.Module, x: torch.Tensor, tap: str = "features"):
    """``(DepthPrediction, tapped feature map)`` of one training pass."""
    if tap == "features":
        prediction = training_pass(model, x)
        return prediction, prediction.features
    captured: list[torch.Tensor] = []
    handle = model.get_submodule(tap).register_forward_hook(lambda _m, _i, out: captured.append(out))
    try:
        prediction = training_pass(model, x)
    finally:
        handle.remove()
    feature = captured[-1]
    if not isinstance(feature, torch.Tensor):
        raise UserError(f"feature tap '{tap}' does not output a tensor; choose a conv/block module")
    return prediction, feature


class Teacher:
    """A frozen teacher in eval mode: ``teacher(x) -> (depth, features)`` without gradients."""

    def __init__(self, ref: str, tap: str = "features", checkpoint: str | None = None) -> None:
        self.model, self.source = load_model_ref(ref, checkpoint=checkpoint, option="--teacher")
        self.spec = self.source.spec
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
