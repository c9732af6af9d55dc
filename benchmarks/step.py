"""What one training step of the Perceiver costs as the panel grows.

For each --variants size, a child process builds a GPerceiver with the default
architecture over that many diploid loci and times --steps steps of --batch samples
(after one warm-up step), then reports its peak RSS. Two kinds of step:

- "finetune": the latent head (3 blocks, regression) over every locus, or with
  --prop-x over that share of them drawn once per batch as the loader draws them,
  with the training's optimiser and gradient clipping, as `fit` trains (item 2 of
  #20: lines/s at 100k markers; a huge panel's fit reads a share of its loci);
- "masked": masked pretraining with the default params (every locus an input, a
  tenth of them targets, hidden as missing), as `pretrain` trains;
- "window": masked pretraining with `input_window` and prop_x giving --window loci
  per sample, as `pretrain` trains on a huge panel (a step should cost the same at
  10k as at 1M markers).

Prints one JSON line per (kind, variants): {"kind", "variants", "batch", "loci_in",
"ms_per_step", "lines_per_s", "peak_rss_mb", "threads", "memory", "locus_allele_embed"}.
With --memory the model is sized as the command sizes it under that budget. Run one
kind at a time on a quiet machine; `--threads` pins torch's intra-op threads (default:
all cores).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def one(kind: str, variants: int, batch: int, steps: int, window: int, threads: int,
        memory: str | None, prop_x: float = 1.0) -> dict:
    """Time `steps` steps of `kind` over `variants` loci in this process; with `memory`,
    the model is sized to that budget as the command would size it."""
    import torch

    from gperceiver.memory import parse_size
    from gperceiver.model import GPerceiver
    from gperceiver.model.heads import FinetuneHead
    from gperceiver.runtime import flush_denormals, reuse_freed_memory
    from gperceiver.train.architecture import size_tables
    from gperceiver.train.checkpoint import TASK_DECODERS
    from gperceiver.train.optimiser import clip_gradients, configure_adamw
    from gperceiver.train.params import Params

    flush_denormals()
    reuse_freed_memory()
    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(0)
    windowed = kind == "window"
    params = Params().replace(nalleles=3, ploidy=2, input_window=windowed)
    task = "fit" if kind == "finetune" else "masked"
    if memory is not None:
        params = size_tables(params, parse_size(memory), variants, task)
    config = params.model
    position = torch.arange(variants, dtype=torch.float64)
    contig = torch.zeros(variants, dtype=torch.long)
    # the decoders each command builds (fit: none), and window pretraining's sparse
    # per-locus tables, as `pretrain` and `fit` set them
    model = GPerceiver(config, position, contig, 1, decoders=TASK_DECODERS.get(task, ()))
    if windowed:
        model.sparse_tables()
    head = FinetuneHead("latent", config.latent_dim, config.feedforward_dim, 3)
    trained = torch.nn.ModuleList([model, head])
    optimiser = configure_adamw(trained, params)[0][0]
    loci = min(window, variants) if windowed else max(1, round(prop_x * variants))

    def step() -> None:
        x = torch.randint(1, 3, (batch, loci, 2), dtype=torch.int8)
        if kind == "masked":
            index = torch.arange(loci, dtype=torch.int32).expand(batch, -1)
            y_index = torch.stack([torch.randperm(loci)[: loci // 10].sort().values
                                   for _ in range(batch)])
            x.scatter_(1, y_index.long().unsqueeze(-1).expand(-1, -1, 2), 0)
            loss = model.masked_logits(x, index, y_index).logsumexp(-1).mean()
        elif windowed:
            start = int(torch.randint(0, variants - loci + 1, ()))
            index = torch.arange(start, start + loci, dtype=torch.int32).expand(batch, -1)
            y_index = index[:, torch.randperm(loci)[: max(1, loci // 10)]]
            logits = model.masked_logits(x, index, y_index)
            loss = logits.logsumexp(-1).mean()
        else:  # every locus, or a share of them drawn once for the batch
            drawn = torch.randperm(variants)[:loci].sort().values if loci < variants else \
                torch.arange(loci)
            index = drawn.to(torch.int32).expand(batch, -1)
            loss = head(model, x, index).square().mean()
        optimiser.zero_grad()
        loss.backward()
        clip_gradients(trained.parameters(), params.grad_clip)
        optimiser.step()

    step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    seconds = (time.perf_counter() - start) / steps
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"kind": kind, "variants": variants, "batch": batch, "loci_in": loci,
            "ms_per_step": round(1000 * seconds, 1), "lines_per_s": round(batch / seconds, 1),
            "peak_rss_mb": round(peak, 1), "threads": torch.get_num_threads(),
            "memory": memory, "locus_allele_embed": config.locus_allele_embed}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kind", choices=("finetune", "masked", "window"), default="finetune")
    parser.add_argument("--variants", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--window", type=int, default=4096,
                        help="window: input loci per sample")
    parser.add_argument("--prop-x", type=float, default=1.0,
                        help="finetune: the share of loci given as input")
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--memory", default=None,
                        help="a budget (e.g. 3GB) that sizes the model's per-locus tables, "
                             "as the commands' --memory does")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(one(args.kind, args.variants[0], args.batch, args.steps,
                             args.window, args.threads, args.memory, args.prop_x)))
        return
    for variants in args.variants:
        command = [sys.executable, __file__, "--child", "--kind", args.kind, "--variants",
                   str(variants), "--batch", str(args.batch), "--steps", str(args.steps),
                   "--window", str(args.window), "--threads", str(args.threads),
                   "--prop-x", str(args.prop_x)]
        if args.memory:
            command += ["--memory", args.memory]
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode:
            print(json.dumps({"kind": args.kind, "variants": variants,
                              "error": done.stderr.strip().splitlines()[-1:]}))
        else:
            print(done.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    main()
