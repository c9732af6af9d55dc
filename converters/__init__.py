"""Converters: TSV, VCF/BCF, PLINK and VCF Zarr inputs -> the genotype store.

They never import torch: the one-way flow is converters -> store -> loader -> model.
"""

CONVERTER_VERSION = "0.1.0"
