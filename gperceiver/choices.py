"""Every list of choices, declared once: the model, the trainer, the metrics and the
command line (its `choices=`) all read them here. Plain tuples, no imports, so that
`--help` stays fast."""

# Finetuning objectives; every block of a run shares one.
OBJECTIVES = ("regression", "binary", "multiclass", "ordinal")

# Finetuning heads: "latent" (a query per block joins the latents), "pool" (mean-pooled
# latents, then an MLP with one output per block).
HEADS = ("latent", "pool")

# Pretraining tasks (they draw target loci).
PRETRAIN_TASKS = ("masked", "contrastive")

# Every batch the loader builds: the pretraining tasks, plain genotypes (prediction,
# embedding, imputation) and phenotypes (finetuning).
LOADER_TASKS = ("plain", *PRETRAIN_TASKS, "phenotype")
