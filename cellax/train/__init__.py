"""Training and evaluation of the sequence models: tasks, losses, the jitted data-parallel loop,
orbax checkpoints with exact resume, and free-running rollout evaluation in physical units."""
