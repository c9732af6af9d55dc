"""The stores' schema: every variable's name, dims and dtype, declared once.

Declared here: the genotype store (`VARIABLES`), the embedding store that
`gperceiver.embedding.embed` writes (`EMBEDDING_VARIABLES`) and the prediction dataset of
`fit`, `predict` and `baseline` (`PREDICTION_VARIABLES`).

The genotype store follows the VCF Zarr (VCZ) conventions of sgkit and bio2zarr, so
`xarray.open_zarr` and the sgkit ecosystem read it too. Everything that writes or
reads a store refers to the declarations here; `validate` checks a Dataset against
them and names the first variable that does not fit (`check`, for any declarations).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import xarray as xr

# Dimension names (VCZ spelling).
VARIANTS = "variants"
SAMPLES = "samples"
PLOIDY = "ploidy"
ALLELES = "alleles"
CONTIGS = "contigs"
REGION_INDEX_VALUES = "region_index_values"  # bio2zarr's region_index dims
REGION_INDEX_FIELDS = "region_index_fields"

# Sentinels inside call_genotype (VCZ): a missing call, and a padded copy of a
# sample of lower ploidy than the store's (mixed-ploidy data).
MISSING = -1
FILL = -2

# Default chunking: small sample chunks (training reads whole samples), large
# variant chunks.
DEFAULT_SAMPLES_CHUNK = 256
DEFAULT_VARIANTS_CHUNK = 10_000
# A samples chunk above this makes every training read decompress far more samples
# than it uses; `convert vcz` rechunks such stores, the loader warns about them.
MAX_TRAINING_SAMPLES_CHUNK = 512

FORMAT_VERSION = 1
# The version of the code that writes stores (attribute converter_version).
CONVERTER_VERSION = "0.1.0"

# call_genotype attribute: every chunk was written (an absent chunk is lost, not 0/0).
# bio2zarr, like zarr's default, skips chunks that hold only 0 (its fill value).
EVERY_CHUNK = "every_chunk_written"


@dataclass(frozen=True)
class Variable:
    """One store variable: its dims and the numpy dtype kinds it may take."""

    name: str
    dims: tuple[str, ...]
    kinds: str  # numpy dtype kinds accepted: i=int, u=uint, f=float, b=bool, U/O/T=str
    required: bool
    description: str
    dtype: str | None = None  # the dtype every writer uses (None: strings, or the data's)


VARIABLES: dict[str, Variable] = {
    v.name: v
    for v in [
        Variable(
            "call_genotype", (VARIANTS, SAMPLES, PLOIDY), "i", True,
            "allele index per chromosome copy: 0 = first allele; -1 missing, -2 padded copy",
            "int8",
        ),
        Variable(
            "call_genotype_mask", (VARIANTS, SAMPLES, PLOIDY), "b", False,
            "call_genotype < 0", "bool",
        ),
        Variable("variant_contig", (VARIANTS,), "iu", True, "index into contig_id", "int32"),
        Variable("contig_id", (CONTIGS,), "UOT", True, "contig names, in file order"),
        Variable(
            "variant_position", (VARIANTS,), "iuf", True,
            "1-based position within its contig (int64 where one does not fit int32; "
            "cM/Mb inputs scaled, see attrs scale and offset)", "int32",
        ),
        Variable("variant_id", (VARIANTS,), "UOT", True, "marker name (unique)"),
        Variable(
            "variant_allele", (VARIANTS, ALLELES), "UOT", True,
            "allele labels when known (VCF), else empty strings",
        ),
        Variable("sample_id", (SAMPLES,), "UOT", True, "genotype names (unique)"),
        Variable(
            "variant_allele_frequency", (VARIANTS, ALLELES), "f", True,
            "allele frequencies over non-missing calls", "float32",
        ),
        Variable(
            "variant_length", (VARIANTS,), "iu", False,
            "length of the REF allele (1 where it has no label), for region_index", "int32",
        ),
        Variable(
            "region_index", (REGION_INDEX_VALUES, REGION_INDEX_FIELDS), "iu", False,
            "bio2zarr's index of each variant chunk's contig spans (vcztools -r/-t); "
            "variant_position's dtype", "int32",
        ),
    ]
}

# The embedding store (`gperceiver.embedding.embed`): one vector per sample and per locus, beside
# the genotype store's labels (same names, dims and order, so the two merge).
EMBEDDING = "embedding"
LATENTS = "latents"
POSITION_EMBEDDING = "position_embedding"
EMBEDDING_LABELS = ("sample_id", "variant_id", "variant_contig", "variant_position",
                    "contig_id")

EMBEDDING_VARIABLES: dict[str, Variable] = {
    v.name: v
    for v in [
        Variable(
            "sample_embedding", (SAMPLES, EMBEDDING), "f", True,
            "the encoder's latents, mean-pooled over the latent array", "float32",
        ),
        Variable(
            "sample_latents", (SAMPLES, LATENTS, EMBEDDING), "f", False,
            "the encoder's latents themselves (with latents=True)", "float32",
        ),
        Variable(
            "variant_embedding", (VARIANTS, POSITION_EMBEDDING), "f", True,
            "each locus' position embedding", "float32",
        ),
        *(VARIABLES[name] for name in EMBEDDING_LABELS),
    ]
}

# The prediction dataset (`fit`, `predict`, `baseline`): one value per sample and
# phenotype block, next to the observations and folds when they are known.
BLOCKS = "blocks"
CLASSES = "classes"

PREDICTION_VARIABLES: dict[str, Variable] = {
    v.name: v
    for v in [
        Variable("predicted", (SAMPLES, BLOCKS), "f", True,
                 "the prediction (a class's probability, or the expected class)", "float32"),
        Variable("observed", (SAMPLES, BLOCKS), "f", False,
                 "the phenotype's mean response; NaN where not observed", "float32"),
        Variable("cv", (SAMPLES, BLOCKS), "i", False,
                 "cross-validation fold; -1 where none", "int32"),
        Variable("probability", (SAMPLES, BLOCKS, CLASSES), "f", False,
                 "each class's probability, when classifying", "float32"),
        VARIABLES["sample_id"],
        Variable("block", (BLOCKS,), "iuUOT", True, "the phenotype file's block labels"),
        Variable("class", (CLASSES,), "iuUOT", False, "class labels (default 0..k-1)"),
    ]
}



class SchemaError(ValueError):
    """A Dataset does not follow the genotype store schema."""


def validate(ds: xr.Dataset, *, where: str = "store") -> xr.Dataset:
    """Check `ds` against the genotype store's declarations and that it holds samples
    and variants; return `ds`."""
    check(ds, VARIABLES, where=where)
    if ds.sizes[SAMPLES] == 0:
        raise SchemaError(f"{where}: the store holds no samples")
    if ds.sizes[VARIANTS] == 0:
        raise SchemaError(f"{where}: the store holds no variants")
    return ds


def check(ds: xr.Dataset, declared: dict[str, Variable], *, where: str = "dataset") -> None:
    """Check names, dims and dtype kinds of every variable in `declared` (VARIABLES,
    EMBEDDING_VARIABLES, PREDICTION_VARIABLES) against `ds`; name the first misfit."""
    for var in declared.values():
        if var.name not in ds.variables:
            if var.required:
                raise SchemaError(f"{where}: variable '{var.name}' is missing")
            continue
        arr = ds[var.name]
        if tuple(arr.dims) != var.dims:
            raise SchemaError(
                f"{where}: variable '{var.name}' has dims {tuple(arr.dims)}, expected {var.dims}"
            )
        if arr.dtype.kind not in var.kinds:
            raise SchemaError(
                f"{where}: variable '{var.name}' has dtype {arr.dtype}, expected kind "
                f"'{var.kinds}'"
            )


def is_string_dtype(dtype: np.dtype) -> bool:
    """True for the numpy/xarray string dtypes a store may carry."""
    return dtype.kind in "UOT"
