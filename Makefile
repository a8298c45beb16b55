# Two commands on a fresh machine:  `make demo` (the main job end to end)  and  `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN = $(VENV)/bin
DEMO = runs/demo
DEVICE_VENV = runs/device-venv
# The device-runtime tests run again in a base install (no torch) on the newest Python this machine has.
DEVICE_PYTHON ?= $(shell .ci/newest-python)
DEVICE_TEST_VENV ?= .venv-device
DEVICE_TESTS = tests/device_runtime tests/cli/test_device_cli.py $(addprefix tests/bad_inputs/,test_bundles.py \
	test_device.py test_hostile_bundles.py test_stderr.py test_nothing_lost.py)

WEB = device_runtime/web
# The JavaScript device runtime (device_runtime/web) is tested against the Python one when Node.js is here: `make web`
# installs its locked npm packages (no install scripts) and builds the page; Chromium runs the browser tests.
HAVE_NPM := $(shell command -v npm 2>/dev/null)
# pytest-xdist: one worker per core, each test file on one worker (its module fixtures are built once), one thread
# per worker (tests/conftest.py). PYTEST_WORKERS= runs the suite in one process.
PYTEST_WORKERS ?= -n auto --dist loadfile

.PHONY: install demo test test-device web clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[train,dev]'
	touch $@

demo: install
	rm -rf $(DEMO)
	# server: pretrain an extractor, meta-train MTL on top of it, export a bundle
	$(BIN)/mtl pretrain --data synthetic --backbone conv4 --epochs 8 --out $(DEMO)/pretrain
	$(BIN)/mtl evaluate $(DEMO)/pretrain --ways 5 --shots 1 --episodes 600
	$(BIN)/mtl meta-train --data synthetic --algorithm mtl --init $(DEMO)/pretrain --head-init proto \
		--ways 5 --shots 1 --meta-batch 4 --inner-steps 5 --inner-lr 0.1 --iterations 100 --val-every 50 \
		--out $(DEMO)/mtl
	$(BIN)/mtl evaluate $(DEMO)/mtl --ways 5 --shots 1 --episodes 600
	$(BIN)/mtl export $(DEMO)/mtl --out $(DEMO)/bundle.mtlb --single-file
	$(BIN)/mtl evaluate $(DEMO)/bundle.mtlb --ways 5 --shots 1 --episodes 600
	# device: a torch-free install adapts to 5 classes it never saw, then predicts
	$(BIN)/python -m mtl.pipeline.data.dump $(DEMO)/pretrain --out $(DEMO)/new-classes --ways 5 --shots 5 --queries 2
	$(PYTHON) -m venv $(DEVICE_VENV)
	$(DEVICE_VENV)/bin/python -m pip install --quiet .
	$(DEVICE_VENV)/bin/python -c "import importlib.util as u; assert u.find_spec('torch') is None, 'torch present'"
	$(DEVICE_VENV)/bin/mtl bundle verify $(DEMO)/bundle.mtlb
	$(DEVICE_VENV)/bin/mtl adapt $(DEMO)/bundle.mtlb $(DEMO)/new-classes/support --out $(DEMO)/adapted
	$(DEVICE_VENV)/bin/mtl predict $(DEMO)/adapted $(DEMO)/new-classes/query/*/*.png

test: install $(if $(HAVE_NPM),web)
	$(BIN)/ruff check .
	$(if $(HAVE_NPM),cd $(WEB) && npm test --silent)
	$(BIN)/python -m pytest -q $(PYTEST_WORKERS)
	$(MAKE) test-device

# A fresh venv each time: pip resolves the base dependencies for that Python as a device's pip would.
test-device:
	@echo "device-runtime tests in a base install (no torch) on $$($(DEVICE_PYTHON) --version)"
	rm -rf $(DEVICE_TEST_VENV)
	$(DEVICE_PYTHON) -m venv $(DEVICE_TEST_VENV)
	$(DEVICE_TEST_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(DEVICE_TEST_VENV)/bin/python -m pip install --quiet '.[device-test]'
	cd / && $(abspath $(DEVICE_TEST_VENV))/bin/python -c "import importlib.util as u; \
		assert u.find_spec('torch') is None, 'torch present'; \
		assert not [n for n in ('cli', 'pipeline', 'exporters', 'device_runtime') if u.find_spec(n)], 'not under mtl'; \
		import mtl.device_runtime.bundle"
	$(DEVICE_TEST_VENV)/bin/python -m pytest -q -p no:cacheprovider $(PYTEST_WORKERS) $(DEVICE_TESTS)

# the page: device_runtime/web/dist, a static folder any web server can serve (docs/web.md)
web: $(WEB)/node_modules/.package-lock.json
	cd $(WEB) && npm run build --silent

$(WEB)/node_modules/.package-lock.json: $(WEB)/package-lock.json
	cd $(WEB) && npm ci --ignore-scripts --no-audit --no-fund

clean:
	rm -rf $(VENV) $(DEVICE_TEST_VENV) runs .pytest_cache .ruff_cache $(WEB)/node_modules $(WEB)/dist
