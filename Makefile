# Every target creates or reuses the local virtual environment itself (.venv), so a fresh clone
# needs nothing but python3 >= 3.10 with venv.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.sdopt-installed

.PHONY: demo test test-fast bench lock clean browser containers

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade "pip>=24"
	# torch first and exactly: any other spec may pull a multi-GB CUDA build on CPU machines.
	$(PY) -m pip install --quiet -c constraints.txt torch==2.13.0
	$(PY) -m pip install --quiet -c constraints.txt -e '.[dev,cpu]'
	touch $(STAMP)

# The report's browser test needs a real Chromium (Debian's package); installed when we can.
CHROMIUM := $(shell command -v chromium 2>/dev/null)
browser:
ifeq ($(CHROMIUM),)
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	else echo "chromium not installed: the browser test of the HTML report will be skipped"; fi
endif

# The container tests (image build with podman, the action under act) need podman, a local base
# image and act; setup.sh makes them idempotently. When it cannot, those tests skip with a reason.
containers: $(STAMP)
	@bash tests/container/setup.sh || echo "container setup failed: the container tests will be skipped"

demo: $(STAMP)
	MALLOC_MMAP_THRESHOLD_=33554432 MALLOC_TRIM_THRESHOLD_=17179869184 MALLOC_TOP_PAD_=1073741824 \
		$(VENV)/bin/sdopt demo

test: $(STAMP) browser containers
	$(PY) -m pytest -q

test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow"

bench: $(STAMP)
	MALLOC_MMAP_THRESHOLD_=33554432 MALLOC_TRIM_THRESHOLD_=17179869184 MALLOC_TOP_PAD_=1073741824 \
		$(PY) benchmarks/unet_speedup.py

# Re-pin what CI installs (run after changing dependencies in pyproject.toml).
lock: $(STAMP)
	$(PY) -m pip freeze --exclude-editable | grep -v "^sdopt" | sed "s/^torch==2.13.0+cpu$$/torch==2.13.0/" > constraints.txt

clean:
	rm -rf $(VENV) demo-out .pytest_cache
