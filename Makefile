# Every target does its own set-up: a fresh machine needs only Python 3.10+ and make.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.installed

.PHONY: setup test test-slow demo roundtrip peers bench-peers llamacpp test-llamacpp agent-check bench-agent \
	bench-agent-quick mutation clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip
	# torch first: this pin takes the CPU wheel on disk; an unpinned torch pulls a multi-GB CUDA build.
	$(PIP) install torch==2.13.0
	$(PIP) install -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q

test-slow: $(STAMP)
	$(PY) -m pytest -q -m slow

demo: $(STAMP)
	$(PY) -m icae.scripts.demo --config_path icae/configs/pretrain_tiny_qwen2.yaml

roundtrip: $(STAMP)
	$(PY) -m icae.scripts.roundtrip --config_path icae/configs/roundtrip_tiny_qwen2.yaml
	$(PY) -m icae.scripts.roundtrip --config_path icae/configs/roundtrip_tiny_mistral.yaml

# The peers' own environments (.peers/kvpress, .peers/llmlingua): they need other transformers releases.
peers: $(STAMP)
	$(PY) -m icae.benchmarks.peers

bench-peers: peers
	$(PY) -m icae.scripts.write_corpus --out outputs/demo/stdlib_n_z.jsonl
	$(PY) -m icae.scripts.bench_peers --config_path icae/configs/bench_peers_tiny.yaml

# The llama.cpp backend's environment (.engines/llamacpp): this project, and llama-cpp-python built from source with
# the machine's cmake and gcc (PyPI has no wheel of it): 193 compile steps, about 15 min on one free core
# (CMAKE_BUILD_PARALLEL_LEVEL=1; raise it where cores are free). The build directory is kept (.engines/build), so an
# interrupted build resumes where it stopped. docs/engines.md.
LLAMACPP := .engines/llamacpp
$(LLAMACPP)/.installed: pyproject.toml
	$(PYTHON) -m venv $(LLAMACPP)
	$(LLAMACPP)/bin/python -m pip install --upgrade pip
	$(LLAMACPP)/bin/python -m pip install torch==2.13.0
	$(LLAMACPP)/bin/python -m pip install -e '.[dev,engines]'
	CMAKE_BUILD_PARALLEL_LEVEL=$${CMAKE_BUILD_PARALLEL_LEVEL:-1} $(LLAMACPP)/bin/python -m pip install \
		-C build-dir=$(CURDIR)/.engines/build llama-cpp-python==0.3.36
	touch $@

llamacpp: $(LLAMACPP)/.installed

test-llamacpp: llamacpp
	$(LLAMACPP)/bin/python -m pytest -q tests/engines

# mini-swe-agent 2.x (through litellm, in its own environment .agents/mini-swe-agent: litellm's pins are its own)
# against `icae serve`, 10 steps in tool-calling mode and 10 in text-based mode, with an environment that returns
# saved tool outputs and executes nothing. docs/serve.md.
AGENT := .agents/mini-swe-agent
$(AGENT)/.installed:
	$(PYTHON) -m venv $(AGENT)
	$(AGENT)/bin/python -m pip install "mini-swe-agent>=2,<3"
	touch $@

agent-check: $(STAMP) $(AGENT)/.installed
	$(PY) -m tests.agents.agent_check

# The closed-loop agent benchmark (#24): every agent of the spec on the same held-out tasks, served by `icae serve`
# subprocesses the harness starts and stops; the table and a plot under runs/bench_agent/, and the table into
# BENCHMARKS.md between the spec's markers. An earlier run's results are kept unless OVERWRITE=1. docs/bench_agent.md.
BENCH_AGENT_FLAGS := $(if $(OVERWRITE),--overwrite,) --benchmarks_md BENCHMARKS.md
bench-agent: $(STAMP)
	$(PY) -m icae.benchmarks.agent --spec icae/configs/bench_agent/tiny.yaml $(BENCH_AGENT_FLAGS)

bench-agent-quick: $(STAMP)
	$(PY) -m icae.benchmarks.agent --spec icae/configs/bench_agent/quick.yaml $(BENCH_AGENT_FLAGS)

# Mutation testing (mutmut, in .venv: it pulls no torch) of icae/metrics, the sampling functions of decoding.py and
# layouts.py, each in a copy under .mutation/ (one process, nice 19, OMP_NUM_THREADS=1), then the issue-#23 one-line
# bugs, each of which must fail a test. MUTATION=metrics for one target. docs/testing.md ("Mutation testing").
MUTATION ?= metrics decoding layouts known
mutation: $(STAMP)
	$(PY) -c "import mutmut" 2>/dev/null || $(PIP) install mutmut==3.8.1
	OMP_NUM_THREADS=1 nice -n 19 $(PY) -m tests.mutation $(MUTATION)

clean:
	rm -rf $(VENV) build *.egg-info
