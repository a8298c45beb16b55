# Two commands on a fresh machine:  `make demo` (the main job end to end)  and  `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN = $(VENV)/bin
DEMO = runs/demo

.PHONY: install demo test clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[train,dev]'
	touch $@

demo: install
	rm -rf $(DEMO)
	$(BIN)/mtl pretrain --data synthetic --backbone conv4 --epochs 8 --out $(DEMO)/pretrain
	$(BIN)/mtl evaluate $(DEMO)/pretrain --ways 5 --shots 1 --episodes 600
	$(BIN)/mtl evaluate $(DEMO)/pretrain --ways 5 --shots 5 --episodes 600 --method finetune

test: install
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache
