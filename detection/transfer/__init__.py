"""Transfer grids (tasks x inits x trials, local or SLURM), their results, tables and plots."""
