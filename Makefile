# Everyday commands. The README's two set-up commands work without make.
PYTHON ?= python3

.PHONY: install test test-fast bench matrix clean

install:            ## install the pinned CPU torch (if missing) and gpuprobe with test extras
	$(PYTHON) -c "import torch" 2>/dev/null || $(PYTHON) -m pip install torch==2.13.0
	$(PYTHON) -m pip install -e '.[test]'

test:               ## the whole suite (SLURM and browser tests skip without their packages)
	$(PYTHON) -m pytest -q

test-fast:          ## skip the SLURM and browser tests
	$(PYTHON) -m pytest -q -m "not slurm and not browser"

bench:              ## the benchmarks whose numbers BENCHMARKS.md records
	cd benchmarks && $(PYTHON) startup_wall.py && $(PYTHON) hang_verdict.py

matrix:             ## re-render reports/MATRIX.md from reports/
	$(PYTHON) -m gpuprobe matrix --results reports --format markdown -o reports/MATRIX.md

clean:
	rm -rf build dist *.egg-info .pytest_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
