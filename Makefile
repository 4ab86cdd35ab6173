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

clean-venv:
	rm -rf $(VENV)
