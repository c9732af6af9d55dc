"""The Perceiver: shapes for any ploidy, phase-free inputs, per-sample independence."""

from __future__ import annotations

from math import comb
from operator import sub

import pytest
import torch

from gperceiver.model import FinetuneHead, GPerceiver, head_loss, head_predict
from gperceiver.model.decoders import genotype_classes
from gperceiver.model.perceiver import DECODERS, per_locus_floats
from gperceiver.train.params import Params
from tests.tiny_stores import one_torch_thread

pytestmark = pytest.mark.usefixtures(one_torch_thread.__name__)

TINY = dict(allele_embed_dim=6, position_embed_dim=6, num_latents=5, latent_dim=12,
            projection_dim=8, num_self_attention_heads=3, num_self_attention=1,
            num_encode_iters=2, feedforward_dim=20, output_dim=10)
V = 30


def make_model(ploidy=2, n_alleles=4, **changes) -> GPerceiver:
    torch.manual_seed(0)
    p = Params.build(**{**TINY, **changes}).replace(ploidy=ploidy, nalleles=n_alleles + 1)
    position = torch.cat([torch.arange(10) * 100.0, torch.arange(20) * 7.0])
    contig = torch.cat([torch.zeros(10), torch.ones(20)]).long()
    return GPerceiver(p.model, position, contig, 2, dropout=p.dropout,
                      position_trainable=p.position_embed_trainable).eval()


def tokens(b, lx, ploidy, n_alleles, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, n_alleles + 1, (b, lx, ploidy), generator=g)


def loci(b, n, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.stack([torch.randperm(V, generator=g)[:n].sort().values for _ in range(b)])


@pytest.mark.parametrize("ploidy", [1, 2, 4, 6])
def test_shapes_any_ploidy_four_alleles(ploidy):
    model = make_model(ploidy, 4)
    n_classes = sum(comb(4 + k - 1, k) for k in range(1, ploidy + 1))
    assert model.classes.shape == (n_classes, 4)
    x, xi, yi = tokens(3, 20, ploidy, 4), loci(3, 20), loci(3, 7, seed=1)
    assert model.encode(x, xi).shape == (3, 5, 12)
    assert model.masked_logits(x, xi, yi).shape == (3, 7, n_classes)
    twins = torch.stack([x, tokens(3, 20, ploidy, 4, seed=2)], 1)
    assert model.shared_logits(twins, xi, yi).shape == (3, 7, ploidy + 1)
    for kind in ("latent", "pool"):
        for objective, n_out in (("regression", 1), ("binary", 1), ("multiclass", 5),
                                 ("ordinal", 4)):
            head = FinetuneHead(kind, 12, 16, 2, objective, n_classes=5)
            assert head(model, x, xi).shape == (3, 2, n_out)


def test_a_model_builds_only_the_decoders_asked_and_moves_weights_between_them():
    """Finetuning builds no decoder (each holds per-locus read-outs as large as the
    input tables); weights move between models with other decoders, the encoder's
    always whole."""
    full = make_model()
    p = Params.build(**TINY).replace(ploidy=2, nalleles=5)
    position = torch.cat([torch.arange(10) * 100.0, torch.arange(20) * 7.0])
    contig = torch.cat([torch.zeros(10), torch.ones(20)]).long()

    def build(decoders):
        torch.manual_seed(1)
        return GPerceiver(p.model, position, contig, 2, decoders=decoders).eval()

    bare, masked = build(()), build(("masked",))
    for model, decoders in ((bare, ()), (masked, ("masked",)), (full, DECODERS)):
        floats = sum(t.weight.numel() for t in model.per_locus_tables())
        assert floats == V * per_locus_floats(p.model, decoders)  # what a budget sizes
    assert bare.masked is None and bare.contrastive is None and masked.contrastive is None
    assert not any(k.startswith(("masked.", "contrastive.")) for k in bare.state_dict())
    assert sum(t.numel() for t in bare.parameters()) < sum(
        t.numel() for t in full.parameters())
    x, xi = tokens(2, 30, 2, 4), loci(2, 30)
    with pytest.raises(RuntimeError, match="no masked decoder"):
        bare.masked_logits(x, xi, xi[:, :3])
    with pytest.raises(RuntimeError, match="no contrastive decoder"):
        masked.shared_logits(torch.stack([x, x], 1), xi, xi[:, :3])

    bare.load_weights(full.state_dict())  # decoders it lacks are skipped
    assert torch.equal(bare.encode(x, xi), full.encode(x, xi))
    with pytest.raises(RuntimeError, match="Missing key.*masked"):  # a checkpoint's own
        masked.load_weights(bare.encoder_weights())
    masked.load_weights(bare.encoder_weights(), fresh_decoders=True)  # another task's start
    fresh = build(("masked",))
    assert torch.equal(masked.masked.logits.weight, fresh.masked.logits.weight)
    masked.load_weights(full.state_dict())
    assert torch.equal(masked.masked_logits(x, xi, xi[:, :3]), full.masked_logits(x, xi, xi[:, :3]))
    state = full.encoder_weights()
    state.pop("latents")
    with pytest.raises(RuntimeError, match="Missing key.*latents"):
        bare.load_weights(state)
    with pytest.raises(RuntimeError, match="Unexpected key.*extra"):
        bare.load_weights({**full.encoder_weights(), "extra": torch.zeros(1)})


def test_class_lookup_round_trip():
    classes = genotype_classes(3, 4)
    model = make_model(4, 3)
    assert torch.equal(model.classes, classes)
    assert torch.equal(model.class_of(classes), torch.arange(len(classes)))
    assert model.class_of(torch.tensor([[0, 0, 0], [5, 0, 0]])).tolist() == [-1, -1]


@pytest.mark.parametrize("kind", ["learned", "fourier"])
def test_swapping_copies_changes_nothing(kind):
    model = make_model(4, 4, position_embed_kind=kind)
    x, xi, yi = tokens(2, 25, 4, 4), loci(2, 25), loci(2, 5, seed=3)
    swapped = x[..., torch.tensor([2, 0, 3, 1])]
    assert not torch.equal(swapped, x)
    torch.testing.assert_close(model.masked_logits(swapped, xi, yi),
                               model.masked_logits(x, xi, yi))
    twins = torch.stack([x, tokens(2, 25, 4, 4, seed=4)], 1)
    torch.testing.assert_close(model.shared_logits(twins, xi, yi),
                               model.shared_logits(twins[..., torch.tensor([1, 3, 2, 0])], xi, yi))
    # The twins' order does not matter either.
    torch.testing.assert_close(model.shared_logits(twins.flip(1), xi, yi),
                               model.shared_logits(twins, xi, yi))


def test_padded_copies_contribute_nothing_and_differ_from_missing():
    four = make_model(4, 2)
    x = torch.tensor([[[1, 2, -1, -1], [2, 2, -1, -1], [1, 1, -1, -1]]])
    missing = x.clamp(min=0)  # the same copies, but missing instead of padded
    xi, yi = torch.tensor([[0, 5, 9]]), torch.tensor([[3]])
    emb = four.embed.alleles
    torch.testing.assert_close(emb(x), emb(x[..., :2]))
    assert not torch.allclose(four.masked_logits(x, xi, yi), four.masked_logits(missing, xi, yi))


def dense_reference(cross, q, embed, x, xi):
    """What `input_attention` computes, the plain way: keys and values of every
    (sample, locus) embedding and scaled dot-product attention under a mask (a local
    latent reads its run, an empty run reads everything, extra queries read all)."""
    k, v = cross.to_kv(embed(x, xi)).chunk(2, -1)
    mask = None
    if cross.local is not None:
        first, stop = cross.local.span(xi)
        run = cross.local.of(xi).unsqueeze(1) - first  # (B, 1, L)
        rows = torch.arange(q.shape[1]).view(1, -1, 1)
        mask = (run == rows) | (rows >= stop - first)
        mask = (mask | ~mask.any(-1, keepdim=True)).unsqueeze(1)

    def split(t):
        return t.unflatten(-1, (cross.heads, -1)).transpose(1, 2)

    q = q.expand(len(x), -1, -1)
    out = torch.nn.functional.scaled_dot_product_attention(split(q), split(k), split(v),
                                                           attn_mask=mask)
    return out.transpose(1, 2).flatten(-2)


@pytest.mark.parametrize("kind, combine, ploidy, locus, local, heads, window", [
    ("learned", "concat", 2, True, True, 1, False), ("fourier", "add", 2, True, True, 2, False),
    ("fourier", "concat", 4, True, False, 2, False), ("learned", "add", 1, True, True, 1, True),
    ("learned", "concat", 2, False, True, 1, False), ("fourier", "add", 6, False, False, 1, True),
    ("learned", "concat", 2, True, True, 2, True)])
def test_input_attention_is_attention_over_projected_embeddings(kind, combine, ploidy, locus,
                                                                local, heads, window):
    """From the tables alone, the same outputs and gradients as keys and values of
    every input: scattered loci, a window, every locus, runs left empty (3 loci for 5
    latents), scattered loci every row shares (laid out alone), and queries shared by
    the batch or not."""
    from gperceiver.model.input_attention import input_attention

    model = make_model(ploidy, 3, position_embed_kind=kind, position_embed_combine=combine,
                       locus_allele_embed=locus, local_latents=local,
                       num_cross_attention_heads=heads, input_window=window)
    cross, embed = model.iterations[0].cross, model.embed
    weights = [w for w in [*embed.parameters(), *cross.to_kv.parameters()] if w.requires_grad]
    for xi in (loci(3, 12), torch.arange(7, 19).expand(3, -1), torch.arange(V).expand(3, -1),
               loci(3, 3), loci(1, 12).expand(3, -1), loci(1, 4, seed=2).expand(3, -1)):
        x = tokens(3, xi.shape[1], ploidy, 3)
        x[0, 0, -1] = -1  # a padded copy
        n_local = 5 if cross.local is None else -sub(*cross.local.span(xi))
        for batch in (1, 3):
            q = torch.randn(batch, n_local + 2, cross.to_q.out_features, requires_grad=True)
            want = dense_reference(cross, q, embed, x, xi)
            got = input_attention(q, cross.to_kv, embed, x, xi, cross.heads, cross.local)
            torch.testing.assert_close(got, want)
            g = torch.randn_like(want)
            expected = torch.autograd.grad((want * g).sum(), [q, *weights])
            for a, b in zip(torch.autograd.grad((got * g).sum(), [q, *weights]), expected,
                            strict=True):
                torch.testing.assert_close(a, b)


def test_each_sample_depends_on_itself_alone():
    model = make_model(2, 2)
    x, xi, yi = tokens(4, 15, 2, 2), loci(4, 15), loci(4, 3, seed=5)
    batch = model.masked_logits(x, xi, yi)
    for i in range(4):
        one = model.masked_logits(x[i:i + 1], xi[i:i + 1], yi[i:i + 1])
        torch.testing.assert_close(one[0], batch[i], rtol=1e-5, atol=1e-5)
    for kind in ("latent", "pool"):
        head = FinetuneHead(kind, 12, 16, 3, "regression").eval()
        out = head(model, x, xi)
        torch.testing.assert_close(head(model, x[2:3], xi[2:3])[0], out[2], rtol=1e-5,
                                   atol=1e-5)


def test_weight_sharing_and_position_trainability():
    shared = make_model(2, 2, share_weights=True, num_encode_iters=4)
    separate = make_model(2, 2, share_weights=False, num_encode_iters=4)
    assert len(shared.iterations) == 2 and len(separate.iterations) == 4
    count = sum(p.numel() for p in shared.parameters())
    assert count < sum(p.numel() for p in separate.parameters())
    x, xi = tokens(2, 10, 2, 2), loci(2, 10)
    assert shared.encode(x, xi).shape == (2, 5, 12)
    frozen = make_model(2, 2, position_embed_trainable=False)
    assert not frozen.embed.position.table.weight.requires_grad
    fourier = make_model(2, 2, position_embed_kind="fourier")
    assert fourier.embed.position.freqs.requires_grad


def test_head_losses_and_predictions():
    y = torch.tensor([[0.0, 2.0], [1.0, 0.0]])
    mask = torch.tensor([[True, True], [True, False]])
    out = torch.zeros(2, 2, 1)
    assert head_loss("regression", out, y, mask).item() == pytest.approx((0 + 4 + 1) / 3)
    assert head_predict("binary", out).tolist() == [[0.5, 0.5], [0.5, 0.5]]
    logits = torch.tensor([[[5.0, 0, 0], [0, 0, 5.0]], [[0, 5.0, 0], [0, 0, 0]]])
    assert head_predict("multiclass", logits).tolist() == [[0, 2], [1, 0]]
    assert head_loss("multiclass", logits, y, mask).item() < 0.05
    cumulative = torch.tensor([[[3.0, -3.0], [3.0, 3.0]], [[-3.0, -3.0], [0, 0]]])
    assert head_predict("ordinal", cumulative).tolist() == [[1, 2], [0, 0]]
    assert head_loss("ordinal", cumulative, torch.tensor([[1.0, 2.0], [0.0, 0.0]]),
                     mask).item() < 0.2


def test_a_masked_model_learns_a_fixed_batch():
    """Gradients flow everywhere: a tiny model memorises one batch's targets."""
    model = make_model(2, 2).train()
    x, xi, yi = tokens(8, 20, 2, 2), loci(8, 20), loci(8, 6, seed=7)
    target = torch.randint(0, len(model.classes), (8, 6), generator=torch.Generator()
                           .manual_seed(1))
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    losses = []
    for _ in range(60):
        loss = torch.nn.functional.cross_entropy(
            model.masked_logits(x, xi, yi).flatten(0, 1), target.flatten())
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.2 * losses[0]


def test_windowed_local_latents_use_the_runs_a_window_spans():
    """Latent i reads the i-th run of the panel; with windows (input_window) an
    input uses the latents of the runs it spans alone, each with its own loci."""
    from gperceiver.model.perceiver import Segments

    panel = torch.arange(100).unsqueeze(0)
    window = torch.arange(60, 80).unsqueeze(0)  # runs 2 and 3 of 4
    whole = Segments(4, 100)
    assert whole.span(window) == (0, 4)
    assert whole.of(window)[0].tolist() == [2] * 15 + [3] * 5
    segments = Segments(4, 100, windowed=True)
    assert segments.span(panel) == (0, 4) and segments.span(window) == (2, 4)
    decoder = segments.decoder_mask(torch.tensor([[60, 79]]), 2, window)[0, 0]
    assert decoder.tolist() == [[True, True], [True, True]]
    assert whole.decoder_mask(torch.tensor([[30]]), 4)[0, 0, 0].tolist() == [
        True, True, True, False]


def test_targets_decoded_in_runs_give_the_same_logits_and_gradients(monkeypatch):
    """A decoder reads DECODE_ROWS (sample, target) pairs at a time, recomputing each
    run in the backward pass: the same logits and gradients as all at once."""
    from gperceiver.model import perceiver

    model = make_model(2, 2, local_latents=True).train()
    x, xi, yi = tokens(3, 20, 2, 2), loci(3, 20), loci(3, 9, seed=3)
    twins = torch.stack([x, tokens(3, 20, 2, 2, seed=4)], 1)
    weights = [w for w in model.parameters() if w.requires_grad]

    def run():
        masked = model.masked_logits(x, xi, yi)
        shared, alleles = model.twin_logits(twins, xi, yi, alleles=True)
        loss = masked.square().sum() + shared.square().sum() + alleles.square().sum()
        grads = torch.autograd.grad(loss, weights, allow_unused=True)
        return [masked, shared, alleles], grads

    whole, whole_grads = run()
    monkeypatch.setattr(perceiver, "DECODE_ROWS", 7)  # runs of 2 targets for 3 samples
    runs, run_grads = run()
    for a, b in zip(runs, whole, strict=True):
        torch.testing.assert_close(a, b)
    for a, b in zip(run_grads, whole_grads, strict=True):
        if b is None:
            assert a is None
        else:  # sums in another order
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)

