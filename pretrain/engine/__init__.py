"""The pretraining loop and what runs it: recipes, checkpoints, progress, SLURM submission."""
