"""`gperceiver embed CKPT STORE -o EMB.zarr`: sample and locus embeddings as a Zarr Dataset."""

from __future__ import annotations

import argparse
from pathlib import Path

from gperceiver.cli.training import add_memory_flag


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "embed",
        help="embed every sample and locus of a store with a trained encoder",
        description="Stream every sample of STORE (all loci) through the encoder of CKPT "
        "and write an xarray Dataset (Zarr): sample_embedding (samples, embedding), the "
        "latents mean-pooled; with --latents also sample_latents (samples, latents, "
        "embedding); variant_embedding (variants, position_embedding), each locus' "
        "position embedding; sample_id, variant_id, variant_contig, variant_position and "
        "contig_id as in the store. STORE must hold the model's variants. The output "
        "appears only when complete.",
        epilog="examples:\n  gperceiver embed runs/pre/best.ckpt panel.zarr -o emb.zarr\n"
        "  gperceiver plot emb.zarr --phenos phenos.tsv --block 0",
    )
    p.add_argument("checkpoint", metavar="CKPT",
                   help="checkpoint of pretrain or fit, or their run folder (its best.ckpt)")
    p.add_argument("store", metavar="STORE", help="genotype store (Zarr)")
    p.add_argument("-o", "--output", required=True, metavar="EMB.zarr", help="output Zarr")
    p.add_argument("--latents", action="store_true",
                   help="also write every latent vector (num_latents times larger)")
    p.add_argument("--batch-size", type=int, default=64, metavar="N",
                   help="samples encoded at once")
    add_memory_flag(p, "the batches (smaller when a batch would not fit)")
    p.add_argument("--device", default="auto",
                   help="torch device: auto (cuda when available), cpu, cuda, cuda:1, ...")
    p.add_argument("--force", action="store_true", help="replace an existing output")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


TABLE_SUFFIXES = (".tsv", ".csv", ".txt")  # an output named so would be a Zarr folder


def run(args: argparse.Namespace) -> None:
    import sys

    import torch

    from gperceiver.embedding import embed
    from gperceiver.errors import UsageError

    if Path(args.output).suffix.lower() in TABLE_SUFFIXES:
        raise UsageError(f"-o {args.output}: embed writes a Zarr store, not a table; name it "
                         "EMB.zarr (xarray.open_zarr reads it, docs/inspect.md)")
    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    emb = embed(
        args.checkpoint, args.store, args.output, latents=args.latents,
        batch_size=args.batch_size, device=device, force=args.force, memory=args.memory,
        progress=not args.quiet and sys.stderr.isatty(),
    )
    sizes = ", ".join(f"{k} {v}" for k, v in emb.sizes.items() if k != "contigs")
    print(f"wrote {args.output}: {sizes}")
