# sellerlift: every target builds .venv on first use (torch CPU wheel first, then the package).
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
HOST   ?= 127.0.0.1
PORT   ?= 5000
# Tests use both cores; set PYTEST_WORKERS=0 for a serial run.
PYTEST_WORKERS ?= 2

.PHONY: help install lint train train-transformer test test-slow ui bench bench-quick bench-before-after clean

help:
	@echo "make train        train + track + export the default model on the simulator"
	@echo "make test         ruff (lint + format check) and the fast test suite (what CI runs)"
	@echo "make lint         ruff check + ruff format --check (ruff format . fixes the layout)"
	@echo "make test-slow    the slow tests"
	@echo "make ui           the MLflow UI on http://$(HOST):$(PORT)"
	@echo "make sweep        a small Optuna sweep (SWEEP_TRIALS=3), trials nested under one MLflow run"
	@echo "make champion     who holds each data set's sellerlift-sequence-<data>@champion"
	@echo "make score        batch-score EVENTS=... [MAPPING=...] OUT=... with the @champion bundle"
	@echo "make bench        every benchmark; results in benchmarks/results and docs/benchmarks.md"
	@echo "make bench-before-after  the performance pass vs an older commit (BEFORE=<rev>)"
	@echo "make evaluate     the closed loop: every policy run forward on the simulator (BUNDLE=..., QUICK=1)"
	@echo "make ray-up       a 2-node Ray cluster on this machine (then: eval \"\$$(make -s ray-env)\"); make ray-down"
	@echo "make test-scale   the Ray tests on a real 2-node local cluster (slow)"

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first, from the local CPU wheel: nothing below may pull a CUDA build.
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[train,serve,score,scale,dev]"
	# CDNOW_master.txt ships inside the Lifetimes wheel; its code is never imported (breaks on pandas 3).
	$(PY) -m pip install -q --no-deps lifetimes==0.11.3
	@touch $(STAMP)

install: $(STAMP)

train: $(STAMP)
	$(PY) train.py $(ARGS)

train-transformer: $(STAMP)
	$(PY) train.py experiment=transformer $(ARGS)

# One thread per library in each test worker: two workers on two cores, and spin-waiting thread pools
# (torch, OpenMP, BLAS) would otherwise oversubscribe them several times over.
TEST_ENV := OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

test: lint
	$(TEST_ENV) $(PY) -m pytest -m "not slow" -n $(PYTEST_WORKERS) --timeout=900 $(ARGS)

# The Ray cluster tests run one at a time (test-scale): two local clusters started side by side by two pytest
# workers share ports, and a job can land on the other worker's cluster.
RAY_TESTS := tests/test_ray_cluster.py tests/test_ray_faults.py
test-slow: $(STAMP)
	$(TEST_ENV) $(PY) -m pytest -m slow -n $(PYTEST_WORKERS) --timeout=3600 $(foreach f,$(RAY_TESTS),--ignore=$(f)) $(ARGS)
	$(TEST_ENV) $(PY) -m pytest -m slow -n 1 --timeout=3600 $(RAY_TESTS) $(ARGS)

bench: $(STAMP)
	$(PY) benchmarks/run_all.py $(ARGS)

bench-quick: $(STAMP)
	$(PY) benchmarks/run_all.py --quick $(ARGS)

# The performance pass measured against an older commit (BEFORE=<rev>, default: the commit before it).
bench-before-after: $(STAMP)
	$(PY) benchmarks/before_after.py $(if $(BEFORE),--before $(BEFORE)) $(ARGS)

ui: $(STAMP)
	$(VENV)/bin/mlflow ui --backend-store-uri sqlite:///$(CURDIR)/mlruns/mlflow.db \
		--default-artifact-root $(CURDIR)/mlruns/artifacts --host $(HOST) --port $(PORT)

clean:
	rm -rf outputs multirun bundles .pytest_cache

# The inference server (serve/, no torch; docs/serving.md): BUNDLE=dir or SELLERLIFT_BUNDLE, else the
# registry alias sellerlift-sequence-<data>@champion (ARGS="--data NAME", default simulator), else the newest bundle of that data set. Binds $(HOST).
SERVE_PORT ?= 8000
.PHONY: serve
serve: $(STAMP)
	$(PY) -m serve --host $(HOST) --port $(SERVE_PORT) $(if $(BUNDLE),--bundle $(BUNDLE)) $(ARGS)

# Reliability (docs/reliability.md): data-in properties, bad config, resume after SIGTERM/SIGKILL, MLflow server.
.PHONY: test-reliability
test-reliability: $(STAMP)
	$(PY) -m pytest -m "slow or not slow" -n $(PYTEST_WORKERS) --timeout=3600 \
		tests/test_data_robustness.py tests/test_bad_config.py tests/test_resume.py tests/test_mlflow_server.py $(ARGS)

# Workflows (docs/workflows.md): sweeps, the champion, the seller's own file, batch scoring, DDP.
SWEEP_TRIALS ?= 3
.PHONY: sweep champion train-seller-file score config-reference
sweep: $(STAMP)  ## a small Optuna sweep: $(SWEEP_TRIALS) tiny trials nested under one MLflow parent run
	$(PY) train.py hparams_search=sequence_optuna hydra.sweeper.n_trials=$(SWEEP_TRIALS) experiment=smoke \
		data.source.n_customers=1000 $(ARGS)
champion: $(STAMP)  ## who holds each data set's sellerlift-sequence-<data>@champion, its metric and bundle
	$(PY) -m sellerlift.champion show
train-seller-file: $(STAMP)  ## train on examples/seller_events.csv (configs/data/seller_file.yaml)
	$(PY) train.py data=seller_file $(ARGS)
# make score EVENTS=my_events.csv MAPPING=my_mapping.yaml OUT=scores.parquet [BUNDLE=bundles/<run id>] [AS_OF=2026-01-01]
EVENTS  ?= examples/seller_events.csv
MAPPING ?= examples/seller_events.mapping.yaml
OUT     ?= scores.parquet
score: $(STAMP)  ## batch-score EVENTS with BUNDLE (default: the @champion bundle) into OUT
	$(PY) -m sellerlift.score --bundle $(if $(BUNDLE),$(BUNDLE),@champion) --events $(EVENTS) \
		$(if $(MAPPING),--mapping $(MAPPING)) $(if $(AS_OF),--as-of $(AS_OF)) --out $(OUT) $(ARGS)
config-reference: $(STAMP)  ## regenerate docs/config_reference.md from configs/
	$(PY) scripts/config_reference.py

# The closed loop (docs/closed_loop.md): every policy run forward in the simulated world of BUNDLE (default: the
# newest bundle trained on the simulator) with common random numbers; plots, tables, JSON, an MLflow run.
.PHONY: evaluate
evaluate: $(STAMP)
	$(PY) -m sellerlift.evaluate closed-loop $(if $(BUNDLE),--bundle $(BUNDLE)) $(if $(QUICK),--quick) $(ARGS)


# Scale (docs/scale.md): the same jobs on Ray. A local multi-node cluster for trying it (RAY_NODES x RAY_CPUS).
RAY_NODES ?= 2
RAY_CPUS  ?= 1
.PHONY: ray-up ray-env ray-down test-scale bench-ray
ray-up: $(STAMP)
	$(PY) -m sellerlift.engine cluster up --nodes $(RAY_NODES) --cpus $(RAY_CPUS)
ray-env: $(STAMP)
	@$(PY) -m sellerlift.engine cluster env
ray-down: $(STAMP)
	$(PY) -m sellerlift.engine cluster down
test-scale: $(STAMP)
	$(PY) -m pytest -m "slow or not slow" -n 1 --timeout=3600 tests/test_engine.py $(RAY_TESTS) $(ARGS)
bench-ray: $(STAMP)
	$(PY) benchmarks/bench_ray.py $(ARGS)
