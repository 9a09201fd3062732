"""Where the checkout is, for tests that run its tools and read its configs."""

import os

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOOLS = os.path.join(REPO, "tools")
CONFIGS = os.path.join(REPO, "configs")
