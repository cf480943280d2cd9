# Fresh-machine entry points: `make demo` and `make test` (see README.md).
VENV ?= .venv
PYTHON ?= python3
TORCH_SPEC ?= torch==2.13.0
PY := $(VENV)/bin/python
DEMO_DIR ?= demo_out

.PHONY: setup demo test demo-weights la2018-weights monailabel-test

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q $(TORCH_SPEC)
	# openvino: ~70 MB of wheels, ~20 s; CI then runs the backend agreement and export tests too; int8 (NNCF), dicom
	# and measure (meshio, matplotlib): their tests.
	$(PY) -m pip install -q -e ".[test,openvino,int8,export,dicom,measure]"
	# The nnU-Net reference network for the equivalence tests; --no-deps because its timm
	# requirement would pull torchvision and a CUDA build of torch.
	$(PY) -m pip install -q --no-deps dynamic-network-architectures==0.4.4
	# nnU-Net v2 itself, the oracle of tests/test_nnunet_*.py (test-only): --no-deps with just what its
	# predictor, preprocessing and plans handling import; its own requirements (timm, batchgeneratorsv2,
	# blosc2>=4's httpx/pydantic, ...) would pull torchvision and a CUDA build of torch.
	$(PY) -m pip install -q --no-deps nnunetv2==2.8.1 acvl-utils==0.2.6 batchgenerators==0.25.5 blosc2==3.3.2 \
	  numexpr msgpack ndindex platformdirs py-cpuinfo requests urllib3 idna certifi charset-normalizer \
	  pandas python-dateutil pytz tzdata six threadpoolctl
	touch $@

test: setup
	$(PY) -m ruff check .
	$(PY) -m pytest -q --durations=25

# Opt-in: the MONAI Label app against a live server on 127.0.0.1, in a virtualenv built from scratch
# by apps/monailabel/README.md's install commands (about 2 GB, in a temporary folder). Not part of `make test`.
monailabel-test:
	bash apps/monailabel/test_live.sh

demo: setup
	$(VENV)/bin/cascade demo --out $(DEMO_DIR)

# Retrain the shipped phantom demo weights (about an hour on 2 CPU cores; not run by CI): 16 phantoms
# on the generator's full 360 mm field of view and 8 on a 200 mm one, at the demo's 1.25 mm grid.
DEMO_TRAIN ?= demo_weights_run
demo-weights: setup
	$(VENV)/bin/cascade phantom $(DEMO_TRAIN)/full --cases 16 --seed 0 --shape 44 288 288 --spacing 2.5 1.25 1.25
	$(VENV)/bin/cascade phantom $(DEMO_TRAIN)/small --cases 8 --seed 100 --shape 24 160 160 --spacing 2.5 1.25 1.25
	mkdir -p $(DEMO_TRAIN)/phantoms && mv $(DEMO_TRAIN)/full/* $(DEMO_TRAIN)/phantoms/
	for case in $(DEMO_TRAIN)/small/*; do name=$$(basename $$case); renamed=MBAS_1$${name#MBAS_}; mkdir -p $(DEMO_TRAIN)/phantoms/$$renamed; \
	  mv $$case/$${name}_gt.nii.gz $(DEMO_TRAIN)/phantoms/$$renamed/$${renamed}_gt.nii.gz; \
	  mv $$case/$${name}_label.nii.gz $(DEMO_TRAIN)/phantoms/$$renamed/$${renamed}_label.nii.gz; done
	cd bundles/atria_localizer && OMP_NUM_THREADS=1 ../../$(PY) -m monai.bundle run training --meta_file configs/metadata.json \
	  --config_file "['configs/train.json','configs/demo.json']" --bundle_root ../../$(DEMO_TRAIN)/localizer \
	  --dataset_dir ../../$(DEMO_TRAIN)/phantoms --num_folds 6 --fold 0 & \
	cd bundles/atria_segmenter && OMP_NUM_THREADS=1 ../../$(PY) -m monai.bundle run training --meta_file configs/metadata.json \
	  --config_file "['configs/train.json','configs/demo.json']" --bundle_root ../../$(DEMO_TRAIN)/segmenter \
	  --dataset_dir ../../$(DEMO_TRAIN)/phantoms --num_folds 6 --fold 0 --mask_from_label true & \
	wait
	cp $(DEMO_TRAIN)/localizer/models/model.pt bundles/atria_localizer/models/demo/model.pt
	cp $(DEMO_TRAIN)/segmenter/models/model.pt bundles/atria_segmenter/models/demo/model.pt
	$(PY) -c "from cascade.weights_manifest import record_shipped_weights as r; [r(f'bundles/atria_{s}', [f'bundles/atria_{s}/models/demo/model.pt']) for s in ('localizer', 'segmenter')]"

# Retrain the shipped real-anatomy weights (--pretrained la2018; docs/real_data.md): the CPU recipe's
# 5-fold cross-validation on the 80 LA-only scans (about 3.5 hours on 2 CPU cores; not run by CI), then
# the five fold models into both bundles in half precision. The scans are never committed.
LA2018 ?= ../shared/data/la2018
LA2018_WORK ?= cv_la2018
la2018-weights: setup
	$(VENV)/bin/cascade crossval $(LA2018) --work $(LA2018_WORK) --folds 5 --config la2018 --annotated left_atrium
	$(PY) -c "from cascade.bundles import publish_weights; [publish_weights('$(LA2018_WORK)', s, 'la2018') for s in ('localizer', 'segmenter')]"
