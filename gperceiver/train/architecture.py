"""The architecture a run's model gets, before it is built.

A pretrained model's config is taken whole (`take_architecture`); ploidy and allele
count come from the store (`resolve_params`); a new model keeps its per-locus allele
rows only when the run fits the memory budget with them (`size_tables`).
"""

from __future__ import annotations

import json
from dataclasses import replace

from gperceiver.data.tasks import task_sizes
from gperceiver.errors import UsageError
from gperceiver.memory import announce, plan_tables, run_bytes
from gperceiver.model.config import ARCHITECTURE
from gperceiver.model.perceiver import per_locus_floats
from gperceiver.store import Store, schema, store_name
from gperceiver.train.checkpoint import TASK_DECODERS
from gperceiver.train.params import Params


def model_params(params: Params, store: Store, task: str, budget: int,
                 pretrained: Params | None = None, pretrained_where: str = "") -> Params:
    """`params` with the architecture of the model a `task` run on `store` builds: the
    `pretrained` model's whole when there is one, else a new one sized to `budget`."""
    if pretrained is not None:
        params = take_architecture(params, pretrained, pretrained_where)
    params = resolve_params(params, store.ds, store_name(store))
    if pretrained is None:
        params = size_tables(params, budget, int(store.ds.sizes[schema.VARIANTS]), task)
    return params


def take_architecture(params: Params, pretrained: Params, where: str) -> Params:
    """`params` with the pretrained model's whole config (every field that shapes the
    network or its masks); a field the params set to another value is refused."""
    for key in ARCHITECTURE:
        mine, theirs = getattr(params.model, key), getattr(pretrained.model, key)
        if key in params.given and mine is not None and mine != theirs:
            raise UsageError(
                f"{key}: the params give {json.dumps(mine)}, but the pretrained model {where} "
                f"was built with {json.dumps(theirs)}; a pretrained architecture is taken "
                f"whole (drop '{key}' from the params)")
    return params.replace(**pretrained.model.to_dict())


def resolve_params(params: Params, ds, where: str) -> Params:
    """Fill nalleles/ploidy from the store; refuse values that contradict it."""
    ploidy, nalleles = int(ds.sizes[schema.PLOIDY]), int(ds.sizes[schema.ALLELES]) + 1
    for key, value in (("ploidy", ploidy), ("nalleles", nalleles)):
        given = getattr(params.model, key)
        if given is not None and given != value:
            raise UsageError(f"{key} is {given} in the params but {value} in the store {where}")
    return params.replace(ploidy=ploidy, nalleles=nalleles)


def size_tables(params: Params, budget: int, n_variants: int, task: str) -> Params:
    """`params` with per-locus allele rows kept or dropped as the memory budget allows
    a new model for `task` (`memory.plan_tables`); a note says so when it mattered.
    A value the params give is kept."""
    config = params.model
    decoders = TASK_DECODERS.get(task, ())
    asked = config.locus_allele_embed if "locus_allele_embed" in params.given else None
    n_loci = task_sizes("plain", n_variants, params.prop_x, params.prop_y)[0]
    plan = plan_tables(
        budget, n_variants=n_variants, asked=asked,
        floats_with=per_locus_floats(replace(config, locus_allele_embed=True), decoders),
        floats_without=per_locus_floats(replace(config, locus_allele_embed=False), decoders),
        others=run_bytes(budget, batch_size=params.batch_size, n_loci=n_loci))
    announce(plan, False)
    if plan.locus_alleles == config.locus_allele_embed:
        return params
    return params.replace(locus_allele_embed=plan.locus_alleles)
