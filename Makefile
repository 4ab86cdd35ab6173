# Set-up and entry points. `make demo` and `make test` each create .venv if missing,
# install what they need (torch pinned by constraints.txt to the CPU build on our machines)
# and run.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test bench data-fmnist clean-venv

$(STAMP): pyproject.toml constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -c constraints.txt -e '.[dev]'
	@touch $(STAMP)

# Fashion-MNIST for the demo: already present, else Debian's dataset-fashion-mnist, else the
# official download (with checksum verification).
data-fmnist: $(STAMP)
	@$(PY) -c "from invtransfer.data.formats import load_source; load_source('fashion-mnist')" >/dev/null 2>&1 \
	  || { command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ] && \
	       { apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1 || \
	         { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1; }; }; } \
	  || $(VENV)/bin/invtransfer data download fashion-mnist

demo: $(STAMP) data-fmnist
	$(VENV)/bin/invtransfer demo

test: $(STAMP)
	$(PY) -m pytest

# Benchmarks (no speed is ever asserted; tests/test_benchmarks.py runs each script at its smallest
# size): pipelines side by side in one process, ratios with median [min, max] over repeats; logs
# and JSON lines in $(BENCH_OUT)/. One thread each (BENCH_THREADS): on 2 CPU cores that two
# training jobs keep busy, two threads spin in OpenMP barriers and time the contention, not the
# pipelines (eKLD's true transform: 10 instead of 611 images x draws per second). Sized for 10
# minutes there: about 3-4 minutes at load average 4 (estimated from one repeat of each, with a
# cold torch.compile cache 1 more). benchmarks/README.md has each one's full command, larger
# settings and the results.
BENCH_OUT ?= runs/bench
BENCH_THREADS ?= 1
bench: SHELL := /bin/bash
bench: .SHELLFLAGS := -o pipefail -c
bench: export OMP_NUM_THREADS := $(BENCH_THREADS)
bench: $(STAMP) data-fmnist
	@mkdir -p $(BENCH_OUT)
	$(PY) benchmarks/classifier_throughput.py --config configs/cifar10_lt/ce.yaml --steps 1 --repeats 3 --json \
	  | tee $(BENCH_OUT)/classifier_throughput.log
	$(PY) benchmarks/munit_throughput.py --settings paper_b1 paper_b4 --seconds 5 --rounds 3 --json \
	  | tee $(BENCH_OUT)/munit_throughput.log
	$(PY) benchmarks/git_overhead.py --steps 1 --repeats 3 --json | tee $(BENCH_OUT)/git_overhead.log
	$(PY) benchmarks/git_filter_cost.py --batches 1 --repeats 3 --json | tee $(BENCH_OUT)/git_filter_cost.log
	$(PY) benchmarks/augment_costs.py --config configs/cifar10_lt/ce.yaml --steps 1 --repeats 3 --json \
	  | tee $(BENCH_OUT)/augment_costs.log
	$(PY) benchmarks/ekld_throughput.py --images-per-class 4 --draws 5 --repeats 3 --json \
	  | tee $(BENCH_OUT)/ekld_throughput.log
	$(PY) benchmarks/memory_epochs.py --epochs 6 --json | tee $(BENCH_OUT)/memory_epochs.log

clean-venv:
	rm -rf $(VENV)
