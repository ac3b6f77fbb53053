# The two commands of the README. Both run the idempotent set-up first.
.PHONY: demo test setup

demo: setup
	.venv/bin/emotion demo

test: setup
	.venv/bin/python -m pytest

setup:
	bash scripts/setup.sh
