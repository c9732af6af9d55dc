"""Training: hyper-parameters, the Lightning engine, pretraining."""
