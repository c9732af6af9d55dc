"""gperceiver: Perceiver-style genomic prediction from chunked Zarr genotype stores.

Importing the package is light (no torch): heavy parts load on first use.
"""

from gperceiver.preprocessing import gen_allele_decoder
from gperceiver.store import open_store

__version__ = "0.1.0"
__all__ = ["__version__", "gen_allele_decoder", "open_store"]
