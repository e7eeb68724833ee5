"""Training: train state and optimiser, jitted steps, checkpoints, and the epoch loop."""
