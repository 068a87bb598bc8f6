"""Model zoo: MobileNetV2 + FBNet (the paper's), FastDepth, named specs and the factory.

Names are resolved lazily (PEP 562) so that listing specs does not import torch.
"""

import importlib

_EXPORTS = {
    "load_checkpoint": "checkpoint", "read_checkpoint": "checkpoint", "save_checkpoint": "checkpoint",
    "DepthNet": "depthnet", "DepthPrediction": "depthnet",
    "calibrate_batchnorm": "init",
    "DEFAULT_INPUT_SIZE": "plan", "network_plan": "plan", "spec_input_size": "plan",
    "DEFAULT_MODEL": "spec", "build_model": "spec", "list_models": "spec", "registry": "spec",
    "resolve_spec": "spec", "spec_from_record": "spec", "spec_hash": "spec",
    "count_macs": "stats", "count_parameters": "stats", "model_stats": "stats",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'mobiledepth.arch' has no attribute '{name}'")
    return getattr(importlib.import_module(f"mobiledepth.arch.{_EXPORTS[name]}"), name)
