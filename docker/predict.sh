#!/bin/sh
# The image's entrypoint: segment every case under $INPUT (default /input) into $OUTPUT (default /output).
#
# Input: the MBAS data release's layout (INPUT/MBAS_XXX/MBAS_XXX_gt.nii.gz; a label map beside an image
# is left alone), or nnU-Net imagesTs (X_0000.nii.gz) or a flat folder of NIfTI images, or DICOM series.
# Output: OUTPUT/<case>_label.nii.gz per image (uint8; 0 background, 1 atrial walls, 2 right atrium,
# 3 left atrium; the input's shape, affine and orientation), OUTPUT/predictions.csv (one QC row per case)
# and OUTPUT/run.json (weights with checksums, settings, versions). A rerun keeps finished cases.
#
# Weights ($WEIGHTS, the image's build argument WEIGHTS, default la2018): a shipped name (la2018: real
# scans, labels the left atrium only; demo: phantoms only), or "models" for the cross-validation work
# folder at $MODELS (default /opt/models: docker/models/ baked in at build time, or a folder mounted there).
# Arguments after the image name go to `cascade predict` (e.g. --output_format both, --tta true).
set -e
INPUT=${INPUT:-/input}
OUTPUT=${OUTPUT:-/output}
WEIGHTS=${WEIGHTS:-la2018}
MODELS=${MODELS:-/opt/models}
if [ "$WEIGHTS" = models ]; then
  set -- --models "$MODELS" "$@"
else
  set -- --pretrained "$WEIGHTS" "$@"
fi
echo "predict.sh: $INPUT -> $OUTPUT with weights $WEIGHTS"
# shellcheck disable=SC2086  # PREDICT_ARGS (build argument) holds several flags
exec cascade predict "$INPUT" "$OUTPUT" --device auto --resume $PREDICT_ARGS "$@"
