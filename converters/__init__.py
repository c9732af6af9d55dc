"""Converters: TSV, VCF/BCF, PLINK and VCF Zarr inputs -> the genotype store.

They parse their input and write it through `gperceiver.store.write`; they never
import torch: the one-way flow is converters -> store -> loader -> model.
"""
