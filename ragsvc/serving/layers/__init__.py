"""Model building blocks for the serving engine (the only place, with model_runner.py, touching tensors)."""
