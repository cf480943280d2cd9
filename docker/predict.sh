#!/bin/sh
# Segment every case under /input (MBAS, nnU-Net imagesTs or flat layout) into /output.
set -e
exec cascade predict /input /output --device auto --overwrite $PREDICT_ARGS "$@"
