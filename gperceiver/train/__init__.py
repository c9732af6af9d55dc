"""Training: the settings (`params`, holding the model's config; `original_params` reads
the original tool's files), the Lightning engine (`engine`), pretraining (`pretrain`),
finetuning (`finetune`) and checkpoints (`checkpoint`: reading, rebuilding the model,
resolving a run folder)."""
