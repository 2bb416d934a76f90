# Two commands on a fresh machine:
#   make course   set up .venv, then run every notebook in order into outputs/executed/ (ipynb + html)
#   make test     set up .venv, then ruff, the unit tests and nbval over every notebook and solution (smoke profile)

PYTHON ?= $(shell command -v python3.11 2>/dev/null || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# make test runs the notebooks hermetically: tiny profile, the embedded dataset, outputs kept apart
SMOKE_ENV := CXR_PROFILE=smoke CXR_DATASET=synthetic CXR_OUTPUT_DIR=outputs/smoke

.PHONY: setup course test lint unit notebooks benchmarks clean \
        nbval-prepare nbval-train-a nbval-train-b nbval-read-runs-a nbval-read-runs-b

setup: $(STAMP)

$(STAMP): requirements.txt
	@$(PYTHON) -c 'import sys; v = sys.version_info[:2]; sys.exit(0 if (3, 11) <= v <= (3, 13) else \
	  f"Python {v[0]}.{v[1]} found; the course needs 3.11-3.13 (3.11 recommended): make PYTHON=python3.11 ...")'
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements.txt
	@touch $@

course: setup
	$(BIN)/python -m utils notebooks

test: setup lint unit notebooks

lint: setup
	$(BIN)/ruff check .
	$(BIN)/actionlint

unit: setup
	$(BIN)/python -m pytest -n 2 --dist worksteal

# nbval runs every notebook, then its solutions, each in one kernel that keeps one core busy. The lessons form a
# chain: 01 prepares the data, 04-08 train the runs that 09-11 and the solutions read. Between those links two
# lanes run side by side; the nbval-* targets below are that chain, written as make prerequisites.
notebooks: setup
	@$(MAKE) --no-print-directory -j2 --output-sync=target nbval-read-runs-a nbval-read-runs-b

NBVAL  := $(SMOKE_ENV) $(BIN)/python -m pytest --nbval-lax --nbval-current-env -p no:cacheprovider -q
lesson  = $(foreach n,$(1),notebooks/$(n)_*.ipynb solutions/$(n)_solutions.ipynb)

nbval-prepare:
	$(NBVAL) $(call lesson,01)
nbval-train-a: nbval-prepare
	$(NBVAL) $(call lesson,04 05 06 03)
nbval-train-b: nbval-prepare
	$(NBVAL) $(call lesson,02 07 08)
nbval-read-runs-a: nbval-train-a nbval-train-b
	$(NBVAL) $(call lesson,09 10)
nbval-read-runs-b: nbval-train-a nbval-train-b
	$(NBVAL) $(call lesson,11)

# real images from ../shared when present (each script says so and skips otherwise); about 40 minutes on 2 cores
benchmarks: setup
	$(BIN)/python benchmarks/pipeline.py --source shared
	$(BIN)/python benchmarks/real_data.py --models cnn mobilenet_025 --profile laptop
	$(BIN)/python benchmarks/levers.py
	$(BIN)/python benchmarks/calibration.py outputs/benchmarks/runs/pneumonia/cnn outputs/benchmarks/runs/pneumonia/mobilenet_025
	$(BIN)/python benchmarks/real_data.py --models mobilenet_025 --dataset pneumonia3 --seeds 42 1 2
	$(BIN)/python benchmarks/export.py

clean:
	rm -rf outputs/smoke outputs/executed .pytest_cache
