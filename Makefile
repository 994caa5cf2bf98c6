# The two commands of the README: `make demo` and `make test`.
# Both create .venv with the pinned stack when it is missing or stale.
VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: bootstrap test demo clean

bootstrap:
	@VENV=$(VENV) bash scripts/bootstrap.sh

# pytest exits 5 when it collected no test: that is a failure here.
test: bootstrap
	@$(PY) -m pytest tests -v -rA --durations=15 $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo 'make test: pytest collected no tests' >&2; exit 1; fi; \
	exit $$rc

demo: bootstrap
	@$(PY) -m ms_rcnn_mm.demo $(DEMO_ARGS)

clean:
	rm -rf work_dirs .pytest_cache
