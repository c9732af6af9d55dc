"""`gperceiver impute CKPT STORE -o OUT_STORE`: fill missing calls with a pretrained model."""

from __future__ import annotations

import argparse

from gperceiver.cli.training import add_memory_flag


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "impute",
        help="fill missing calls with a pretrained model's most probable genotype",
        description="Write OUT_STORE: STORE with every missing call (-1) replaced by the "
        "most probable genotype of the masked-pretrained model in CKPT (consistent with "
        "the copies already called). Same schema, samples, variants and order. STORE "
        "must have the variants the model was trained on.",
        epilog="example:\n  gperceiver impute run/best.ckpt panel.zarr -o imputed.zarr",
    )
    p.add_argument("checkpoint", metavar="CKPT", help="checkpoint from gperceiver "
                   "pretrain, or its run folder (best.ckpt, else last.ckpt)")
    p.add_argument("store", metavar="STORE", help="genotype store (Zarr)")
    p.add_argument("-o", "--output", required=True, metavar="OUT_STORE", help="store to write")
    p.add_argument("--batch-size", type=int, default=16, help="samples per batch")
    add_memory_flag(p, "the batches (smaller when a batch would not fit)")
    p.add_argument("--force", action="store_true", help="replace an existing output")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    from gperceiver.impute import impute

    out = impute(args.checkpoint, args.store, args.output, batch_size=args.batch_size,
                 force=args.force, progress=not args.quiet, memory=args.memory)
    print(f"imputed {out.sizes['samples']} samples x {out.sizes['variants']} variants "
          f"into {args.output}")
