"""The Perceiver model: embeddings, encoder, Perceiver IO decoders, finetuning heads."""

from gperceiver.model.heads import OBJECTIVES, FinetuneHead, head_loss, head_predict
from gperceiver.model.perceiver import GPerceiver

__all__ = ["GPerceiver", "FinetuneHead", "head_loss", "head_predict", "OBJECTIVES"]
