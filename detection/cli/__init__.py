"""Command-line mains of the detection-side tools; ``tools/*.py`` and console scripts call them."""
