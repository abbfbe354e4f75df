"""``python -m base_models …``: see :mod:`base_models.cli`."""

from base_models.cli import main

main()
