"""Base-model runners: train timm backbones on the folds of folds.parquet and write runs.

    python -m base_models --model resnet18 --data data/mask --epochs 5 --img-size 512x384

or, from Python, ``base_models.train(model=..., data=..., ...)`` with the same parameter names.
This package imports torch and timm; ``stackkit`` never imports it.
"""

__all__ = ["RunResult", "train"]


def __getattr__(name: str):
    # torch and timm load only when a runner is used, so `python -m base_models --help` is quick
    if name in __all__:
        from base_models import runner

        return getattr(runner, name)
    raise AttributeError(f"module 'base_models' has no attribute {name!r}")
