#!/bin/sh
# How the README pictures in docs/img were made, from the mice data set
# (../shared/data/mice: 1,814 mice x 10,346 SNPs, three traits). Run from the
# repository root; CPU only: the tiny model of fit_params.json takes about 4
# minutes per epoch on 2 busy cores, the rest a few minutes.
set -e
W=${W:-/tmp/gperceiver-readme}
MICE=${MICE:-../shared/data/mice}
mkdir -p "$W"
gperceiver convert tsv --markers "$MICE/markers.tsv.gz" --chroms "$MICE/chroms.tsv" \
    -o "$W/mice.zarr" --force -q
gperceiver fit "$W/mice.zarr" "$MICE/phenos.tsv" --cv 0 -o "$W/fit" \
    --params docs/img/fit_params.json --force -q
gperceiver embed "$W/fit" "$W/mice.zarr" -o "$W/mice_embedding.zarr" --force -q
gperceiver baseline "$W/mice.zarr" "$MICE/phenos.tsv" --cv 0 -o "$W/gblup_cv0" --force
gperceiver plot "$W/fit" -o "$W/fit_pictures" --force
cp "$W/fit_pictures/learning_curves.png" docs/img/
gperceiver plot "$W/gblup_cv0" -o docs/img --force              # observed_vs_predicted.png
gperceiver plot "$W/mice_embedding.zarr" --phenos "$MICE/phenos.tsv" --block 2 \
    -o docs/img --force                                         # mice_embedding.pca.png
