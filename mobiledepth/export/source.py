"""Resolve what to export: a zoo name, a spec YAML, or a user's ``module:factory`` (and a checkpoint).

The resolver itself is :mod:`mobiledepth.arch.resolve`, shared by every command that takes a
model; export adds only its defaults (the paper's model, random weights from seed 0, heads
stripped, eval mode, a factory probed once for a depth-map output). The factory contract is in
docs/export.md.
"""

from __future__ import annotations

import os

from mobiledepth.arch.resolve import (  # noqa: F401 - re-exported: export's public names since issue 1
    FACTORY_REF, ResolvedModel, architecture_fingerprint, deploy_module, is_factory_ref, load_factory,
)

ModelSource = ResolvedModel  # a model ready to export, with what identifies it


def load_model_source(ref: str | dict | None = None, checkpoint: str | os.PathLike | None = None,
                      seed: int = 0, input_size: tuple[int, int] | None = None) -> ModelSource:
    """Build the model behind ``ref`` (default: the checkpoint's spec, else the paper's), load ``checkpoint``,
    strip the training-only heads and switch to eval mode. Without a checkpoint the random weights
    come from ``seed`` (a factory is called with torch's RNG seeded), so the same export is the same bytes.
    A factory model is probed once at ``input_size`` (default: its own size) so a broken contract is one line."""
    from mobiledepth.arch.resolve import check_depth_output, resolve_model
    from mobiledepth.arch.spec import DEFAULT_MODEL

    source = resolve_model(ref, checkpoint, seed=int(seed), with_heads=False, default=DEFAULT_MODEL)
    source.model.eval()
    if source.kind == "factory":  # the user's module: one probe names a broken contract in one line
        check_depth_output(source.model, input_size or source.default_input_size, f"--model {source.name}")
    return source
