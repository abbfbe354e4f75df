"""stackkit: ensembling and stacking image classifiers over out-of-fold logits.

The library never imports torch or timm; those belong to ``base_models``.
"""

__version__ = "0.1.0"
