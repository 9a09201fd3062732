"""Speed of the MoCo data path and training step, side by side with the reference implementation."""
