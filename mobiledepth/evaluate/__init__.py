"""WHDR and the evaluation of a model (torch, ONNX or TFLite) on a DIW-format dataset."""

from mobiledepth.evaluate.whdr import WhdrResult, pair_correct, sample_bilinear, whdr, whdr_of_prediction

__all__ = [
    "EvalResult",
    "torch_runtime",
    "WhdrResult",
    "evaluate",
    "evaluate_module",
    "evaluate_runtime",
    "open_runtime",
    "prepare_evaluation",
    "run_evaluation",
    "pair_correct",
    "sample_bilinear",
    "whdr",
    "whdr_of_prediction",
]


def __getattr__(name: str):
    if name in ("EvalResult", "torch_runtime", "evaluate", "evaluate_module", "evaluate_runtime", "open_runtime",
                "prepare_evaluation", "run_evaluation"):
        from mobiledepth.evaluate import evaluate as _module

        return getattr(_module, name)
    raise AttributeError(f"module 'mobiledepth.evaluate' has no attribute '{name}'")
