#!/bin/sh
# Segment every case under /input (MBAS, nnU-Net imagesTs or flat layout, or DICOM series) into /output.
set -e
# Weights: the work folder baked in at /opt/models when it holds folds, else the bundles' own.
if [ -d /opt/models/localizer ]; then MODELS="--models /opt/models"; else MODELS=""; fi
exec cascade predict /input /output --device auto --resume $MODELS $PREDICT_ARGS "$@"
