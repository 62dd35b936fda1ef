# The two commands of the README. Both do all set-up first (scripts/setup.sh is idempotent).
.PHONY: setup demo test lint bench

setup:
	@bash scripts/setup.sh

## Bring up the local stack and run the pipeline on simulated traffic.
demo: setup
	@bash scripts/demo.sh

## Lint, type-check and run every test (unit and integration, on a private real stack).
test: setup lint
	.venv/bin/pytest

lint:
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
	.venv/bin/mypy

bench: setup
	.venv/bin/python benchmarks/bench_simulate.py
