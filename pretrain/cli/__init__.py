"""Command-line mains of the pretraining tools; ``tools/*.py`` and console scripts call them."""
