"""Studies: several trainings compared on one test set (label-efficiency curves, ablations,
GLAM against its baselines), each a ``radsight`` sub-command."""
