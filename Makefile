# Two commands on a fresh machine: `make bench` and `make test`. Each installs what it needs.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# The CPU build on this disk; a torch range alone would pull a multi-GB CUDA build on Linux.
TORCH_SPEC ?= torch==2.13.0
STAMP := $(VENV)/.installed

.PHONY: setup test test-slow test-isa bench microbench report parity clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[test]"
	touch $(STAMP)

# Tests run in TEST_WORKERS processes (pytest-xdist; auto = one per CPU): most of them wait on whole commands in
# child processes, so two workers keep both cores of a 2-core host busy. TEST_WORKERS=0 runs them in one process.
TEST_WORKERS ?= auto
PYTEST := $(PY) -m pytest -q -p no:cacheprovider -n $(TEST_WORKERS)

# Everything but the slow end-to-end tests, a test file per worker (files share module fixtures). CI runs both.
test: setup
	$(PYTEST) --dist loadfile -m "not slow" tests

# The whole-command end-to-end tests marked slow (kill -9 of parity and bench, torchrun jobs, bf16, real data),
# spread test by test: a few files hold most of the time.
test-slow: setup
	$(PYTEST) --dist load -m slow tests

# The float-kernel tests with oneDNN and MKL held to another instruction set than the host's (default AVX2: what
# an AVX-512 host runs on an AVX2-only one), so a test tuned to one ISA's rounding fails here first.
# E.g. make test-isa ISA_ONEDNN=SSE41 ISA_MKL=SSE4_2 ISA_ATEN=default on an AVX2 host.
# ATen's own vectorised kernels (elementwise, reductions) follow ATEN_CPU_CAPABILITY: avx2, or default (no AVX).
ISA_ONEDNN ?= AVX2
ISA_MKL ?= AVX2
ISA_ATEN ?= avx2
test-isa: setup
	ONEDNN_MAX_CPU_ISA=$(ISA_ONEDNN) MKL_ENABLE_INSTRUCTIONS=$(ISA_MKL) ATEN_CPU_CAPABILITY=$(ISA_ATEN) \
		$(PY) -m pytest -q -p no:cacheprovider -m numerics tests

# The quick tier on the default profiles (single-thread, colab-free-cpu); prints where the result is.
# BENCH_ARGS passes more, e.g. BENCH_ARGS="--profile laptop-4c --data-dir /data".
bench: setup
	$(PY) -m suite bench --tier quick $(BENCH_ARGS)

# pytest-benchmark timings of the quantizer, the projection and one training step; not part of `make test`.
microbench: setup
	$(PY) -m pytest -q -p no:cacheprovider -o python_files='bench_*.py' tests/microbench $(MICROBENCH_ARGS)

# Markdown + one self-contained HTML page from everything under reports/results and reports/submitted
# (plus the parity run's histories and ONNX checks when present); REPORT_ARGS passes more.
report: setup
	$(PY) -m suite report --out reports/report $(REPORT_ARGS)

# The CI gate: fp32 and tathe4 for parity.toml's paired seeds on real CIFAR-10, the 2-bit and 3-bit controls
# judged from their recorded accuracies, ONNX verified; writes reports/parity.md and fails with the reason on a gap
# over tolerance or a control that passes. PARITY_ARGS passes more (--controls near|all retrains controls).
parity: setup
	$(PY) -m suite parity $(PARITY_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .benchmarks
