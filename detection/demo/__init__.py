"""``make demo``: the embedded digit data and the staged pipeline that runs every tool on it."""
