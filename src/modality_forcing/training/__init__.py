"""Training: the one loop for every stage and scale, its per-sample draws, checkpoints, optimiser,
distributed wrappers and preview grids."""
