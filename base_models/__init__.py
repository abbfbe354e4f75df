"""Base-model runners: train timm backbones on the folds of folds.parquet and write runs.

    python -m base_models --model resnet18 --data data/mask --epochs 5 --img-size 512x384

or, from Python, ``base_models.train(model=..., data=..., ...)`` with the same parameter names.
This package imports torch and timm; ``stackkit`` never imports it.
"""

from base_models.runner import RunResult, train

__all__ = ["RunResult", "train"]
