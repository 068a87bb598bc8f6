"""Training: the paper's losses, distillation, loss rebalancing and a resumable trainer.

``from mobiledepth.train import train`` runs a config; the pieces live in ``losses``,
``rebalance``, ``distill``, ``config`` and ``trainer``.
"""

__all__ = ["DEFAULTS", "Rebalancer", "TrainResult", "resolve_config", "train"]


def __getattr__(name: str):
    if name in ("train", "TrainResult"):
        from mobiledepth.train import trainer

        return getattr(trainer, name)
    if name in ("DEFAULTS", "resolve_config"):
        from mobiledepth.train import config

        return getattr(config, name)
    if name == "Rebalancer":
        from mobiledepth.train.rebalance import Rebalancer

        return Rebalancer
    raise AttributeError(f"module 'mobiledepth.train' has no attribute '{name}'")
