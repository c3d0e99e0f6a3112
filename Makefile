# worldmodels: every target is an artifact of data/<pipeline>/, built by one `wm` stage.
#
#   make all                      the default pipeline end to end
#   make collect PIPELINE=smoke   one stage of another pipeline
#   make collect SET="collect.episodes=200 collect.workers=4"
#   make test                     the full suite (what CI runs); make test-fast leaves out the slow tests
#
# Each stage command resumes and does nothing when its output is complete, so its target is
# always handed to `wm`; a stage's output changes (and later stages re-run) only when `wm`
# actually writes it.

PIPELINE ?= cartpole_balance
DATA_DIR ?= data
SET ?=
PYTHON ?= python3
# pytest-xdist processes of make test (the tests marked ray run after them, one at a time).
TEST_WORKERS ?= 2

VENV := .venv
STAMP := $(VENV)/.installed
WM := $(VENV)/bin/wm
PIPELINE_NAME := $(basename $(notdir $(PIPELINE)))
OUT := $(DATA_DIR)/$(PIPELINE_NAME)
WM_ARGS := --pipeline $(PIPELINE) --data-dir $(DATA_DIR) $(foreach setting,$(SET),--set $(setting))
EGL_PACKAGES := libegl1 libegl-mesa0 libgl1-mesa-dri

.PHONY: install collect vae mdnrnn controller evaluate oracle readout state-model dreamer report all test test-fast bench bench-pipeline device-check clean distclean FORCE

# The agents a pipeline trains (its report.agents): `make all` asks the pipeline, then builds what they need.
AGENTS ?= worldmodel dreamer
REPORT_NEEDS = $(OUT)/scores/oracle.json \
  $(if $(filter worldmodel,$(AGENTS)),$(OUT)/scores/worldmodel.json,$(OUT)/scores/zero.json) \
  $(if $(filter dreamer,$(AGENTS)),$(OUT)/scores/dreamer.json)

all: | $(STAMP)
	@agents="$$($(WM) config $(WM_ARGS) --get report.agents)" && \
	  $(MAKE) --no-print-directory $(OUT)/report.html AGENTS="$$agents"

install: $(STAMP)

# The virtual environment, created and filled on first use. MuJoCo renders headless through
# EGL, which needs Mesa's libraries from the system.
$(STAMP): pyproject.toml
	@if command -v dpkg >/dev/null 2>&1; then \
	  missing=""; for p in $(EGL_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	  if [ -n "$$missing" ]; then \
	    if [ "$$(id -u)" = 0 ]; then \
	      echo "Installing the EGL libraries MuJoCo renders with:$$missing"; \
	      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	    else \
	      echo "MuJoCo needs these system libraries to render headless. Run:" >&2; \
	      echo "  sudo apt-get install -y$$missing" >&2; exit 1; \
	    fi; \
	  fi; \
	fi
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet -e '.[dev]'
	touch $@

collect: $(OUT)/rollouts.h5

$(OUT)/rollouts.h5: FORCE | $(STAMP)
	$(WM) collect $(WM_ARGS)

vae: $(OUT)/latents.h5

$(OUT)/vae.pt: $(OUT)/rollouts.h5 FORCE
	$(WM) train-vae $(WM_ARGS)

$(OUT)/latents.h5: $(OUT)/vae.pt
	$(WM) encode $(WM_ARGS)

mdnrnn: $(OUT)/mdnrnn.pt

$(OUT)/mdnrnn.pt: $(OUT)/latents.h5 FORCE
	$(WM) train-mdnrnn $(WM_ARGS)

controller: $(OUT)/agent.json

# C, then the iterative rounds when iterate.iterations > 0; agent.json names the final agent and
# changes only when it does.
$(OUT)/agent.json: $(OUT)/mdnrnn.pt FORCE
	$(WM) train-controller $(WM_ARGS)
	$(WM) iterate $(WM_ARGS)

evaluate: $(OUT)/scores/worldmodel.json

$(OUT)/scores/worldmodel.json: $(OUT)/agent.json
	$(WM) evaluate $(WM_ARGS)

# Without V+M+C (report.agents), evaluate scores the baselines only.
$(OUT)/scores/zero.json: $(OUT)/rollouts.h5
	$(WM) evaluate $(WM_ARGS)

oracle: $(OUT)/scores/oracle.json

$(OUT)/scores/oracle.json: | $(STAMP)
	$(WM) oracle $(WM_ARGS)

# Not part of `make all`: can what C reads carry the task (the oracle imitated from [z, h])?
readout: $(OUT)/scores/readout.json

$(OUT)/scores/readout.json: $(OUT)/mdnrnn.pt $(OUT)/scores/oracle.json
	$(WM) readout $(WM_ARGS)

# Not part of `make all`: is V what limits V+M+C? M and C on the true state instead of V's z.
state-model: $(OUT)/scores/state_model.json

$(OUT)/scores/state_model.json: $(OUT)/rollouts.h5
	$(WM) state-model $(WM_ARGS)

dreamer: $(OUT)/scores/dreamer.json

# Dreamer reads the same rollouts. `make all` lists it after V+M+C, so that its figures show V+M beside the RSSM.
$(OUT)/scores/dreamer.json: $(OUT)/rollouts.h5 FORCE
	$(WM) dreamer $(WM_ARGS)

# `make report` pages whatever has run (a missing stage shows as missing); `make all` first runs
# every stage the page shows.
report: | $(STAMP)
	$(WM) report $(WM_ARGS)

$(OUT)/report.html: $(REPORT_NEEDS) FORCE
	$(WM) report $(WM_ARGS)

# The report's test opens it in headless Chromium (Debian's package), installed here when missing.
test: $(STAMP)
	@if ! command -v chromium >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "Installing Chromium, which the report's test renders the page with"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; \
	  else \
	    echo "The report's test needs Chromium. Run:" >&2; echo "  sudo apt-get install -y chromium" >&2; exit 1; \
	  fi; \
	fi
	WM_REQUIRE_BROWSER=1 $(VENV)/bin/python -m pytest -q -n $(TEST_WORKERS) -m "not ray"
	$(VENV)/bin/python -m pytest -q -m ray

# For development: the tests not marked slow, in one process (under 2 minutes on 2 cores); the report's
# browser test skips where Chromium is missing. `make test` (CI) runs every test.
test-fast: $(STAMP)
	$(VENV)/bin/python -m pytest -q -m "not slow"

bench: $(STAMP)
	$(VENV)/bin/python benchmarks/collect.py
	$(VENV)/bin/python benchmarks/vae.py
	$(VENV)/bin/python benchmarks/mdnrnn.py
	$(VENV)/bin/python benchmarks/controller.py
	$(VENV)/bin/python benchmarks/dreamer.py
	$(VENV)/bin/python benchmarks/threads.py
	$(VENV)/bin/python benchmarks/ray_backend.py
	$(VENV)/bin/python -m benchmarks.checksums

# The V+M+C pipeline on three seeds (each ~15 minutes on 2 cores; a stopped run goes on where it stopped):
# every stage's time, the env steps used and the score, in benchmarks/results/pipeline_<pipeline>.json.
bench-pipeline: $(STAMP)
	$(VENV)/bin/python -m benchmarks.pipeline --pipeline $(PIPELINE) --data-dir $(DATA_DIR)/bench \
	  $(foreach setting,$(SET),--set $(setting))

# On a machine with a CUDA GPU (at most 8 minutes): the CUDA tests, the smoke pipeline on CUDA, and
# CPU against GPU speeds in benchmarks/results/device.json. Without a GPU it measures the CPU only.
device-check: $(STAMP)
	$(VENV)/bin/python benchmarks/device_check.py

clean:
	rm -rf $(OUT) .pytest_cache benchmarks/results
	find . -name __pycache__ -not -path './$(VENV)/*' -prune -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV) *.egg-info

FORCE:
