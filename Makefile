# videojob: render videos with FFmpeg and report their progress truthfully.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.setup-done

.DEFAULT_GOAL := help
.PHONY: help setup run run-cluster test test-wheel-ffmpeg proto check-proto lint bench chaos chaos-single clean

help: ## Show the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

setup: $(STAMP) ## Create .venv and install everything (quick when already done)

# uv installs the same pinned packages as pip would, resolving and fetching them in parallel
# (about five times quicker on a fresh machine). Unlike pip it writes no bytecode unless asked:
# where PYTHONDONTWRITEBYTECODE is set, every process would compile each module it imports
# (about 1 s of CPU for each service start).
$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip uv
	$(BIN)/uv pip install --quiet --compile-bytecode --python $(BIN)/python -e '.[dev]'
	@touch $(STAMP)

run: setup ## Start render service, export service and gateway on the defaults (Ctrl-C stops all)
	$(BIN)/python scripts/run_stack.py

# The local PostgreSQL (created when missing); override with make run-cluster DATABASE=postgresql://...
# STORAGE=s3: media and outputs in a SeaweedFS started with the cluster, no directory shared by two
# processes (and two render services, each rendering in a scratch directory of its own).
DATABASE ?= postgresql://postgres@127.0.0.1:5432/videojob
EXPORTS ?= 3
STORAGE ?= local
RENDERS ?= $(if $(filter s3,$(STORAGE)),2,1)

run-cluster: setup ## Start 3 export replicas on the local PostgreSQL, a render service and a gateway (EXPORTS=, RENDERS=, DATABASE=, STORAGE=local|s3)
	$(BIN)/python scripts/run_stack.py --database '$(DATABASE)' --create-database --exports $(EXPORTS) --renders $(RENDERS) --storage $(STORAGE)

# Most tests wait on real processes, so more workers than cores pay off; the tests marked serial
# (timing under load: short chaos runs, clusters with short leases) form one group that one
# worker runs one after the other. Users run Debian's ffmpeg as often as the imageio-ffmpeg
# wheel's: with another ffmpeg in use, the tests marked ffmpeg run once more with the wheel's,
# at the same time (scripts/run_tests.sh).
TEST_WORKERS ?= 4

test: setup check-proto ## Run the test suite (the FFmpeg-facing part twice when two FFmpeg builds are here)
	TEST_WORKERS=$(TEST_WORKERS) scripts/run_tests.sh

test-wheel-ffmpeg: setup ## Run only the FFmpeg-facing tests, with the imageio-ffmpeg wheel's FFmpeg
	FFMPEG_BINARY="$$($(BIN)/python -c 'import imageio_ffmpeg; print(imageio_ffmpeg.get_ffmpeg_exe())')" \
		$(BIN)/python -m pytest -n $(TEST_WORKERS) -m ffmpeg

proto: setup ## Regenerate the protobuf / gRPC code and type stubs from protos/
	scripts/generate_protos.sh

check-proto: setup ## Fail when the committed generated code is stale
	scripts/check_protos.sh

lint: setup ## ruff and mypy (strict)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

bench: setup ## Run the benchmarks, print a table, write bench/results.json
	$(BIN)/python -m bench

chaos: setup ## The long fault-injection run on a cluster (3 export replicas on PostgreSQL, 2 render services, outputs in SeaweedFS)
	$(BIN)/python -m tests.chaos.harness --cluster --jobs $(or $(CHAOS_JOBS),300) $(CHAOS_ARGS)

chaos-single: setup ## The long fault-injection run on one machine's stack (SQLite)
	$(BIN)/python -m tests.chaos.harness --jobs $(or $(CHAOS_JOBS),300) $(CHAOS_ARGS)

clean: ## Remove the virtualenv and runtime data
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
