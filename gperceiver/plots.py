"""Pictures of a training run, an embedding and a genotype store (matplotlib, PNG).

Every picture is drawn on a bare `matplotlib.figure.Figure` (Agg canvas, no pyplot
and no global backend state) and written atomically, so a half-drawn PNG never
appears. Inputs are what other stages write: a run folder's `metrics.csv` (Lightning
CSVLogger) and `predictions.tsv`, an embeddings Zarr (`gperceiver embed`) and a
genotype store. Store statistics are computed out of core with Dask.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from pathlib import Path

import dask
import dask.array as da
import numpy as np
import pandas as pd
import xarray as xr
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from gperceiver.atomic import atomic_output, check_writable
from gperceiver.data.phenotypes import absent_fold, fold_numbers, one_held_out
from gperceiver.errors import CannotWriteError, InputFormatError, InputNotFoundError, UsageError
from gperceiver.inputs import numeric_column, read_tsv
from gperceiver.metrics import pearson_r
from gperceiver.outputs import read_predictions
from gperceiver.store import schema
from gperceiver.store.frequencies import missingness

DPI = 100
GREY = "#c8c8c8"
HIGHLIGHT = "#d62728"
TRAIN_COLOUR = "#1f77b4"

# Output file names: a run folder's pictures; a store's or an embedding's get its stem first.
LEARNING_CURVES = "learning_curves.png"
PREDICTIONS = "observed_vs_predicted.png"
ALLELE_FREQUENCY = "allele_frequency.png"
MISSINGNESS = "missingness.png"
SAMPLE_PCA = "pca.png"


# ---------------------------------------------------------------- small helpers


def _save(fig: Figure, out: str | os.PathLike, force: bool) -> Path:
    """Write `fig` as a PNG at `out`, atomically; return the path."""
    out = Path(out)
    with atomic_output(out, force) as tmp:
        fig.savefig(tmp, format="png", dpi=DPI)
    return out


def _grid(n: int, ncols: int = 3, size: tuple[float, float] = (4.0, 3.4)) -> tuple[Figure, list]:
    """A figure with `n` panels in rows of at most `ncols`; unused panels hidden."""
    ncols = max(1, min(ncols, n))
    nrows = math.ceil(n / ncols)
    fig = Figure(figsize=(size[0] * ncols, size[1] * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel().tolist()
    for ax in axes[n:]:
        ax.set_visible(False)
    return fig, axes[:n]


def _strings(arr: xr.DataArray) -> np.ndarray:
    """A string variable (numpy StringDType, object or fixed width) as a numpy str array."""
    return np.asarray([str(v) for v in np.asarray(arr.values).tolist()], dtype=str)


# ---------------------------------------------------------------- learning curves

_PREFIXES = ("train_", "training_", "val_", "valid_", "validation_", "test_")
_SUFFIXES = ("_step", "_epoch")


def _family(column: str) -> str:
    """train_loss, val_loss, train_loss_epoch -> loss: one panel per family."""
    name = column
    for prefix in _PREFIXES:
        if name.startswith(prefix):
            name = name[len(prefix):]
            break
    for suffix in _SUFFIXES:
        if name.endswith(suffix):
            name = name[: -len(suffix)]
            break
    return name or column


def read_metrics(path: str | os.PathLike) -> pd.DataFrame:
    """A Lightning CSVLogger `metrics.csv`: `epoch`, `step` and sparse metric columns."""
    path = Path(path)
    if not path.is_file():
        raise InputNotFoundError(f"{path}: no such metrics file")
    try:
        table = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise InputFormatError(path, f"not a metrics CSV ({str(e).strip()})") from None
    metrics = [c for c in table.columns if c not in ("epoch", "step")]
    if not metrics:
        raise InputFormatError(path, "no metric columns besides epoch and step", line=1)
    for column in table.columns:
        numeric_column(path, table, column, allow_empty=True)
    return table.apply(pd.to_numeric, errors="coerce")


def _x_axis(table: pd.DataFrame) -> str | None:
    """'epoch' when every metric is logged once per epoch, else 'step' (when present)."""
    metrics = [c for c in table.columns if c not in ("epoch", "step")]
    if "epoch" in table.columns and all(
        table.loc[table[c].notna(), "epoch"].is_unique for c in metrics
    ):
        return "epoch"
    return next((c for c in ("step", "epoch") if c in table.columns), None)


def learning_curves_figure(metrics_csv: str | os.PathLike) -> Figure:
    """One panel per metric family (train and validation together) against the step."""
    table = read_metrics(metrics_csv)
    x_name = _x_axis(table)
    x_all = table[x_name].to_numpy() if x_name else np.arange(len(table), dtype=float)
    families: dict[str, list[str]] = {}
    for column in table.columns:
        if column not in ("epoch", "step") and table[column].notna().any():
            families.setdefault(_family(column), []).append(column)
    if not families:
        raise InputFormatError(metrics_csv, "every metric column is empty")
    families = dict(sorted(families.items(), key=lambda item: item[0] != "loss"))  # loss first
    fig, axes = _grid(len(families), ncols=2, size=(5.0, 3.4))
    for ax, (family, columns) in zip(axes, families.items(), strict=True):
        for column in columns:
            rows = table[column].notna().to_numpy()
            x, y = x_all[rows], table[column].to_numpy()[rows]
            ax.plot(x, y, marker="o" if rows.sum() <= 50 else None, ms=3, lw=1.2, label=column)
        values = table[columns].to_numpy(dtype=float)
        values = values[np.isfinite(values)]
        if values.size and values.min() > 0 and values.max() / values.min() > 30:
            ax.set_yscale("log")
        ax.set_title(family)
        ax.set_xlabel(x_name or "row")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        shown = np.unique(x_all[np.isfinite(x_all)])
        if len(shown) == 1:  # one epoch: a point, not an axis of +-0.05 around it
            ax.set_xlim(shown[0] - 1, shown[0] + 1)
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    fig.suptitle(f"learning curves: {Path(metrics_csv).parent.name}")
    return fig


# ---------------------------------------------------------------- observed vs predicted

def recorded_folds(run_dir: str | os.PathLike) -> tuple[int | None, int | None]:
    """(cv, test_fold): the fold a run held out as its metrics.json (fit, baseline)
    records it, `cv` K as validation or `test_fold` K as test (never seen)."""
    for name in ("metrics.json", "params.json"):
        path = Path(run_dir) / name
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if not isinstance(data, dict):
            continue
        cv, test = (data.get(key) for key in ("cv", "test_fold"))
        if _is_fold(test):
            return None, test
        if _is_fold(cv):
            return cv, None
    return None, None


def _is_fold(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def predictions_figure(predictions_tsv: str | os.PathLike, *, cv: int | None = None,
                       test_fold: int | None = None) -> Figure:
    """Observed against predicted, one panel per block, Pearson r in each title.

    With a `cv` column and the held-out fold (`cv`: validation; `test_fold`: test,
    the other rows holding both training and inner validation lines), its rows are
    drawn in red on top of the others and the title gives r on each.
    """
    one_held_out(cv, test_fold)
    fold = cv if test_fold is None else test_fold
    held_name, rest_name = (("validation", "training") if test_fold is None
                            else ("test", "training + validation"))
    table = read_predictions(predictions_tsv)
    table = table[np.isfinite(table["observed"])]
    if table.empty:
        raise InputFormatError(predictions_tsv, "no row has an observed value to compare")
    if fold is not None and "cv" in table.columns and not (table["cv"] == fold).any():
        present = fold_numbers(table["cv"].values)
        raise absent_fold("--cv" if test_fold is None else "--test-fold", fold,
                          predictions_tsv, present)
    blocks = sorted(table["block"].unique())
    fig, axes = _grid(len(blocks), ncols=3, size=(4.0, 3.8))
    for ax, block in zip(axes, blocks, strict=True):
        rows = table[table["block"] == block]
        obs, pred = rows["observed"].to_numpy(), rows["predicted"].to_numpy()
        size = 9 if len(obs) < 500 else 4  # thousands of points: smaller dots
        if fold is not None and "cv" in rows.columns:
            held = (rows["cv"] == fold).to_numpy()
            ax.scatter(obs[~held], pred[~held], s=size, alpha=0.5, c=TRAIN_COLOUR,
                       label=rest_name)
            ax.scatter(obs[held], pred[held], s=1.5 * size, alpha=0.85, c=HIGHLIGHT,
                       label=f"{held_name} (cv {fold})")
            title = (f"block {block}: r = {pearson_r(obs[held], pred[held]):.3f} {held_name}, "
                     f"{pearson_r(obs[~held], pred[~held]):.3f} {rest_name}")
            ax.legend(fontsize="small", loc="upper left")
        else:
            ax.scatter(obs, pred, s=size, alpha=0.6, c=TRAIN_COLOUR)
            title = f"block {block}: r = {pearson_r(obs, pred):.3f} (n = {len(obs)})"
        lo = float(np.nanmin([obs.min(), pred.min()]))
        hi = float(np.nanmax([obs.max(), pred.max()]))
        ax.plot([lo, hi], [lo, hi], ls="--", lw=0.8, c="grey")
        ax.set_title(title, fontsize="medium")
        ax.set_xlabel("observed")
        ax.set_ylabel("predicted")
        ax.grid(alpha=0.3)
    return fig


# ---------------------------------------------------------------- embeddings: PCA


def pca(x: np.ndarray, k: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Scores on the first `k` principal components and their explained variance ratios."""
    x = np.asarray(x, dtype=np.float64)
    centred = x - x.mean(axis=0)
    u, s, _ = np.linalg.svd(centred, full_matrices=False)
    k = min(k, s.size)
    total = float((s**2).sum())
    ratio = (s[:k] ** 2) / total if total > 0 else np.zeros(k)
    scores = u[:, :k] * s[:k]
    if scores.shape[1] < 2:  # a 1-D embedding still gets a 2-D picture
        scores = np.column_stack([scores, np.zeros(len(scores))])
        ratio = np.append(ratio, 0.0)
    return scores, ratio


def read_labels(path: str | os.PathLike) -> pd.Series:
    """A sample label file (TSV with columns `name` and `label`) as name -> label."""
    path = Path(path)
    table = read_tsv(path, "label file", ("name", "label"), dtype=str, keep_default_na=False)
    dup = table["name"].duplicated()
    if dup.any():
        row = int(np.flatnonzero(dup.to_numpy())[0])
        raise InputFormatError(
            path, f"sample '{table['name'].iloc[row]}' appears twice", line=row + 2, column="name"
        )
    return table.set_index("name")["label"]


def block_phenotype(path: str | os.PathLike, names: Sequence[str],
                    block: int | str | None = None) -> tuple[str, np.ndarray]:
    """(label, responses) of phenotype block `block` (None: the first) for samples
    `names` (NaN: unobserved)."""
    from gperceiver.data.phenotypes import read_phenotypes

    phenos = read_phenotypes(path, names)
    blocks = [str(b) for b in np.asarray(phenos["block"].values).tolist()]
    block = blocks[0] if block is None else block
    if str(block) not in blocks:
        raise InputFormatError(path, f"no block {block} (blocks: {', '.join(blocks)})",
                               column="block")
    values = phenos["response"].isel(blocks=blocks.index(str(block))).values
    values = values.astype(np.float64)
    if not np.isfinite(values).any():
        raise InputFormatError(path, f"no sample of the embedding is observed in block {block}")
    return str(block), values


def _open_embedding(emb: str | os.PathLike | xr.Dataset) -> xr.Dataset:
    if isinstance(emb, xr.Dataset):
        ds = emb
    else:
        path = Path(emb)
        if not path.exists():
            raise InputNotFoundError(f"{path}: no such embedding")
        try:
            ds = xr.open_zarr(path)
        except (FileNotFoundError, KeyError, ValueError, TypeError) as e:
            raise InputFormatError(path, f"not a readable embeddings Zarr ({e})") from None
    if "sample_embedding" not in ds.variables:
        raise InputFormatError(emb if not isinstance(emb, xr.Dataset) else "dataset",
                               "variable 'sample_embedding' is missing")
    return ds


def plot_embedding_pca(
    emb: str | os.PathLike | xr.Dataset,
    out: str | os.PathLike,
    *,
    phenos: str | os.PathLike | None = None,
    block: int | str | None = None,
    labels: str | os.PathLike | None = None,
    force: bool = False,
) -> Path:
    """Write `embedding_pca_figure` as a PNG at `out`."""
    fig = embedding_pca_figure(emb, phenos=phenos, block=block, labels=labels)
    return _save(fig, out, force)


def embedding_pca_figure(
    emb: str | os.PathLike | xr.Dataset,
    *,
    phenos: str | os.PathLike | None = None,
    block: int | str | None = None,
    labels: str | os.PathLike | None = None,
) -> Figure:
    """PCA of `sample_embedding`, coloured by one phenotype block or by sample labels."""
    if phenos is not None and labels is not None:
        raise UsageError("colour by --phenos or by --labels, not both")
    ds = _open_embedding(emb)
    x = np.asarray(ds["sample_embedding"].values, dtype=np.float64)
    names = _strings(ds["sample_id"]) if "sample_id" in ds else None
    scores, ratio = pca(x)
    fig = Figure(figsize=(6.4, 5.0), layout="constrained")
    ax = fig.subplots()
    if (phenos is not None or labels is not None) and names is None:
        raise InputFormatError(emb, "variable 'sample_id' is missing: cannot match samples")
    if phenos is not None:
        block, values = block_phenotype(phenos, names, block)
        seen = np.isfinite(values)
        ax.scatter(*scores[~seen].T, s=8, c=GREY, label="no phenotype")
        points = ax.scatter(*scores[seen].T, s=10, c=values[seen], cmap="viridis")
        fig.colorbar(points, ax=ax, label=f"response, block {block}")
        if (~seen).any():
            ax.legend(fontsize="small", loc="best")
        title = f"{seen.sum()} of {len(names)} samples with a phenotype in block {block}"
    elif labels is not None:
        table = read_labels(labels).reindex(names)
        if table.isna().all():
            raise InputFormatError(labels, "no name matches a sample of the embedding")
        kinds = sorted(table.dropna().unique())
        palette = _palette(len(kinds))
        if table.isna().any():
            ax.scatter(*scores[table.isna().to_numpy()].T, s=8, c=GREY, label="no label")
        for kind, colour in zip(kinds, palette, strict=True):
            rows = (table == kind).to_numpy()
            ax.scatter(*scores[rows].T, s=10, color=colour, label=str(kind))
        if len(kinds) <= 20:
            ax.legend(fontsize="small", loc="best", markerscale=1.5)
        title = f"{len(names)} samples, {len(kinds)} labels"
    else:
        ax.scatter(*scores.T, s=10, c=TRAIN_COLOUR)
        title = f"{len(x)} samples"
    ax.set_xlabel(f"PC1 ({ratio[0]:.1%})")
    ax.set_ylabel(f"PC2 ({ratio[1]:.1%})")
    ax.set_title(f"sample embeddings: {title}", fontsize="medium")
    ax.grid(alpha=0.3)
    return fig


def _palette(n: int) -> list:
    """`n` distinguishable colours (tab10 / tab20, then evenly spaced hues)."""
    import matplotlib

    if n <= 10:
        return [matplotlib.colormaps["tab10"](i) for i in range(n)]
    if n <= 20:
        return [matplotlib.colormaps["tab20"](i) for i in range(n)]
    return [matplotlib.colormaps["hsv"](i / n) for i in range(n)]


# ---------------------------------------------------------------- genotype store


def folded_spectrum(ds: xr.Dataset, bins: int = 25) -> tuple[np.ndarray, np.ndarray, int]:
    """Histogram of every non-major allele's frequency (0, 0.5], lazily over variants.

    For biallelic data this is the minor allele frequency spectrum. Returns counts,
    bin edges and the number of monomorphic variants (no second allele observed).
    """
    freq = ds["variant_allele_frequency"].data
    if not isinstance(freq, da.Array):
        freq = da.from_array(np.asarray(freq))
    freq = freq.astype(np.float64)
    edges = np.linspace(0.0, 0.5, bins + 1)

    def non_major(chunk: np.ndarray) -> np.ndarray:
        out = np.where(np.isfinite(chunk) & (chunk > 0), chunk, -1.0)
        if out.shape[0]:
            out[np.arange(out.shape[0]), np.argmax(out, axis=1)] = -1.0  # drop the major allele
        return out

    others = freq.map_blocks(non_major, dtype=np.float64) if freq.shape[1] else freq
    others = others.rechunk({1: -1}) if freq.numblocks[1] > 1 else others
    counts, _ = da.histogram(others.ravel(), bins=edges)
    monomorphic = ((freq > 0).sum(axis=1) < 2).sum()
    with dask.config.set(scheduler="threads"):
        counts, monomorphic = dask.compute(counts, monomorphic)
    return np.asarray(counts), edges, int(monomorphic)


def _open_store(store: str | os.PathLike | xr.Dataset) -> xr.Dataset:
    from gperceiver.store import open_store

    return store if isinstance(store, xr.Dataset) else open_store(store)


def plot_allele_frequency(
    store: str | os.PathLike | xr.Dataset, out: str | os.PathLike, *, force: bool = False
) -> Path:
    """Write `allele_frequency_figure` as a PNG at `out`."""
    return _save(allele_frequency_figure(store), out, force)


def allele_frequency_figure(store: str | os.PathLike | xr.Dataset) -> Figure:
    """The folded allele frequency spectrum of a store."""
    ds = _open_store(store)
    if ds["variant_allele_frequency"].data.shape[1] != ds.sizes[schema.ALLELES]:
        raise InputFormatError(store, "variant_allele_frequency does not match alleles")
    # A multi-allele store rechunked along alleles would split the argmax: keep rows whole.
    ds = ds.assign(variant_allele_frequency=ds["variant_allele_frequency"].chunk({"alleles": -1}))
    counts, edges, monomorphic = folded_spectrum(ds)
    fig = Figure(figsize=(6.4, 4.0), layout="constrained")
    ax = fig.subplots()
    ax.bar(edges[:-1], counts, width=np.diff(edges), align="edge", color=TRAIN_COLOUR,
           edgecolor="white")
    ax.set_xlabel("frequency of the non-major allele(s)")
    ax.set_ylabel("alleles" if ds.sizes[schema.ALLELES] > 2 else "variants")
    ax.set_xlim(0, 0.5)
    n_var = ds.sizes[schema.VARIANTS]
    ax.set_title(f"allele frequency spectrum: {n_var:,} variants, {monomorphic:,} monomorphic",
                 fontsize="medium")
    ax.grid(alpha=0.3, axis="y")
    return fig


def plot_missingness(
    store: str | os.PathLike | xr.Dataset, out: str | os.PathLike, *, force: bool = False
) -> Path:
    """Write `missingness_figure` as a PNG at `out`."""
    return _save(missingness_figure(store), out, force)


def missingness_figure(store: str | os.PathLike | xr.Dataset) -> Figure:
    """Missing rate per variant along the genome and the per-sample distribution."""
    ds = _open_store(store)
    rates = missingness(ds)
    contig = np.asarray(ds["variant_contig"].values)
    contig_names = _strings(ds["contig_id"])
    fig = Figure(figsize=(10.0, 3.8), layout="constrained")
    left, right = fig.subplots(1, 2, width_ratios=[2.2, 1])
    x = np.arange(contig.size)
    variant_rate = rates["variant_missing_rate"].values
    colours = np.where(contig % 2 == 0, TRAIN_COLOUR, "#ff7f0e")
    left.scatter(x, variant_rate, s=4, c=colours)
    ticks, names = [], []
    for c in np.unique(contig):
        where = np.flatnonzero(contig == c)
        ticks.append(float(where.mean()))
        names.append(contig_names[c] if c < contig_names.size else str(c))
    if len(ticks) <= 30:
        left.set_xticks(ticks, names, rotation=90 if len(ticks) > 8 else 0, fontsize="small")
    left.set_xlabel("variant (contig order)")
    left.set_ylabel("missing rate")
    left.set_title(f"per variant: mean {np.nanmean(variant_rate):.2%}", fontsize="medium")
    left.grid(alpha=0.3, axis="y")
    sample_rate = rates["sample_missing_rate"].values
    right.hist(sample_rate[np.isfinite(sample_rate)], bins=20, color=TRAIN_COLOUR,
               edgecolor="white")
    right.set_xlabel("missing rate")
    right.set_ylabel("samples")
    right.set_title(f"per sample: max {np.nanmax(sample_rate):.2%}", fontsize="medium")
    right.grid(alpha=0.3, axis="y")
    return fig


# ---------------------------------------------------------------- dispatch on a path


def _zarr_members(path: Path) -> set[str] | None:
    """Names of the arrays of a local Zarr group, or None when `path` is not one."""
    if not ((path / "zarr.json").is_file() or (path / ".zgroup").is_file()):
        return None
    return {p.name for p in path.iterdir() if p.is_dir()}


def _out_dir(out_dir: str | os.PathLike | None, default: Path) -> Path:
    """The folder to write into: `out_dir` (created when missing) or `default`."""
    if out_dir is None:
        return default
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise CannotWriteError(f"{out}: exists and is not a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise CannotWriteError(f"{out}: cannot create the folder ({e.strerror})") from None
    return out


def find_metrics(run_dir: Path) -> Path | None:
    """RUN_DIR/metrics.csv, else the newest metrics.csv below it (Lightning's versions)."""
    direct = run_dir / "metrics.csv"
    if direct.is_file():
        return direct
    found = sorted(run_dir.glob("**/metrics.csv"), key=lambda p: p.stat().st_mtime)
    return found[-1] if found else None


def plot_path(
    path: str | os.PathLike,
    out_dir: str | os.PathLike | None = None,
    *,
    phenos: str | os.PathLike | None = None,
    block: int | str | None = None,
    labels: str | os.PathLike | None = None,
    cv: int | None = None,
    test_fold: int | None = None,
    force: bool = False,
) -> list[Path]:
    """Every picture that fits `path`: a genotype store, an embeddings Zarr or a run folder.

    A run folder's pictures go into it by default, replacing the ones `fit` or an
    earlier `plot` drew there (they are derived from the folder's own files); a
    store's and an embedding's go next to it, named after it, and like any other
    existing output need `force`. A run's held-out fold (`cv` as validation,
    `test_fold` as test) defaults to the one its metrics.json records. Returns the
    PNGs written.
    """
    path = Path(path)
    if not path.exists():
        raise InputNotFoundError(f"{path}: no such run folder, embedding or store")
    if not path.is_dir():
        raise InputFormatError(path, "expected a run folder, an embeddings Zarr or a store")
    members = _zarr_members(path)
    colouring = phenos is not None or labels is not None
    stem = path.name.removesuffix(".zarr")
    figures: dict[str, Figure] = {}
    if members is not None and "call_genotype" in members:
        if colouring:
            raise UsageError("--phenos/--labels colour an embedding's PCA, not a store")
        default = path.parent
        figures[f"{stem}.{ALLELE_FREQUENCY}"] = allele_frequency_figure(path)
        figures[f"{stem}.{MISSINGNESS}"] = missingness_figure(path)
    elif members is not None and "sample_embedding" in members:
        default = path.parent
        figures[f"{stem}.{SAMPLE_PCA}"] = embedding_pca_figure(
            path, phenos=phenos, block=block, labels=labels)
    else:
        metrics = find_metrics(path) if members is None else None
        predictions = path / "predictions.tsv"
        if metrics is None and not predictions.is_file():
            raise InputFormatError(
                path, "neither a store (call_genotype), an embedding (sample_embedding) nor "
                "a run folder (metrics.csv, predictions.tsv)"
            )
        if colouring:
            raise UsageError("--phenos/--labels colour an embedding's PCA, not a run folder")
        default = path
        if metrics is not None:
            figures[LEARNING_CURVES] = learning_curves_figure(metrics)
        if predictions.is_file():
            if cv is None and test_fold is None:
                cv, test_fold = recorded_folds(path)
            figures[PREDICTIONS] = predictions_figure(predictions, cv=cv, test_fold=test_fold)
    # Every input read and every figure drawn: now write all of them, or none.
    if out_dir is None and default == path:
        force = True  # the run folder's own pictures, redrawn from its own files
    out = _out_dir(out_dir, default)
    for name in figures:
        check_writable(out / name, force)
    return [_save(fig, out / name, force) for name, fig in figures.items()]


# ---------------------------------------------------------------- cross-validation


def cv_figure(table: pd.DataFrame) -> Figure:
    """Test-fold r per block (x) and method (colour): one dot per fold, a bar at the mean."""
    methods = list(dict.fromkeys(table["method"]))
    blocks = sorted(table["block"].unique())
    colours = _palette(len(methods))
    fig = Figure(figsize=(max(4.0, 1.6 * len(blocks) + 2.5), 3.6), layout="constrained")
    ax = fig.subplots()
    width = 0.8 / max(1, len(methods))
    for i, method in enumerate(methods):
        rows = table[table["method"] == method]
        for j, block in enumerate(blocks):
            r = rows.loc[rows["block"] == block, "pearson_r"].astype(float).dropna()
            x = j - 0.4 + width * (i + 0.5)
            ax.scatter(np.full(len(r), x), r, s=14, color=colours[i], alpha=0.8,
                       label=method if j == 0 else None)
            if len(r):
                ax.hlines(r.mean(), x - width * 0.4, x + width * 0.4, color=colours[i], lw=2)
    ax.set_xticks(range(len(blocks)), [f"block {b}" for b in blocks])
    ax.set_ylabel("Pearson r on the test fold")
    ax.set_title("cross-validation: one dot per fold, bar = mean", fontsize=10)
    ax.legend(fontsize=8, frameon=False, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return fig


def plot_cv(table: pd.DataFrame, out: str | os.PathLike, force: bool = False) -> Path:
    """Write `cv_figure(table)` as a PNG."""
    return _save(cv_figure(table), out, force)
