"""The Perceiver model: embeddings, encoder, Perceiver IO decoders, finetuning heads."""

import torch

from gperceiver.model.heads import OBJECTIVES, FinetuneHead, head_loss, head_predict
from gperceiver.model.perceiver import GPerceiver

# Training can leave denormal floats in weights and optimiser state (seen with gradient
# clipping in contrastive pretraining); on a CPU they make every step up to ten times
# slower. Flushing them to zero is set here, at import, so that the intra-op threads
# torch starts later inherit it (the setting is per thread).
torch.set_flush_denormal(True)

__all__ = ["GPerceiver", "FinetuneHead", "head_loss", "head_predict", "OBJECTIVES"]
