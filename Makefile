# The commands people type. CMake does the building; see README.md.
BUILD      ?= build
ASAN_BUILD ?= build-asan
TSAN_BUILD ?= build-tsan
FUZZ_BUILD ?= build-fuzz
JOBS       ?= $(shell nproc 2>/dev/null || echo 2)
# Tests at once: most of a test's time is spent waiting on its servers, so twice the cores.
CTEST_JOBS ?= $(shell echo $$(( $(JOBS) * 2 )))
FUZZ_SECONDS ?= 60
LISTEN     ?= $(or $(KONNECT_LISTEN),127.0.0.1:8080)
DATA_DIR   ?= $(or $(KONNECT_DATA_DIR),./var)

.PHONY: all deps build run test test-fast tsan bench fuzz format clean

all: build

deps:
	@scripts/install-deps.sh build

$(BUILD)/CMakeCache.txt:
	@cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null

build: deps $(BUILD)/CMakeCache.txt
	@cmake --build $(BUILD) -j $(JOBS) --target konnect -- --no-print-directory

run: build
	@mkdir -p -m 700 $(DATA_DIR)
	@echo ""
	@echo "Konnect is starting on http://$(LISTEN) with its data in $(DATA_DIR)/"
	@echo "Dashboard: http://$(LISTEN)/ (sign up, then Settings > API Keys)."
	@echo "In another terminal, create an account and a test key, then call the API:"
	@echo ""
	@echo "  build/konnect account create --email dev@example.com"
	@echo "  export KONNECT_API_KEY=\$$(build/konnect key create --account dev@example.com --mode test --name laptop)"
	@echo "  curl http://$(LISTEN)/v1/chat -H \"Authorization: Bearer \$$KONNECT_API_KEY\" -H \"Content-Type: application/json\" -d '{\"message\": \"Hello\"}'"
	@echo ""
	@echo "account create also prints a one-time link with which the owner sets a dashboard password."
	@echo ""
	@echo "Live keys (--mode live) go to the model backend at $(or $(KONNECT_MODEL_URL),http://127.0.0.1:11434/v1) (KONNECT_MODEL_URL;"
	@echo "the default is a local Ollama). Plans and quotas: see examples/plans.json and README.md."
	@echo ""
	@KONNECT_DATA_DIR=$(DATA_DIR) exec $(BUILD)/konnect serve --listen $(LISTEN)

# Every test, then every test again under AddressSanitizer and UndefinedBehaviorSanitizer, then
# under ThreadSanitizer.
test: deps
	@scripts/install-deps.sh test
	@# The browser and SDK tests' npm dependencies (playwright-core, openai), pinned by the lockfile.
	@cd tests/browser && { [ node_modules/.installed -nt package-lock.json ] || \
		{ npm ci --no-audit --no-fund --loglevel=error && touch node_modules/.installed; }; }
	@cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
	@cmake --build $(BUILD) -j $(JOBS) -- --no-print-directory
	@cd $(BUILD) && ctest --output-on-failure -j $(CTEST_JOBS)
	@cmake -S . -B $(ASAN_BUILD) -DCMAKE_BUILD_TYPE=Debug -DKONNECT_SANITIZE=ON >/dev/null
	@cmake --build $(ASAN_BUILD) -j $(JOBS) -- --no-print-directory
	@cd $(ASAN_BUILD) && ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
		LSAN_OPTIONS=suppressions=$(CURDIR)/tests/lsan.supp:print_suppressions=0 \
		UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 ctest --output-on-failure -j $(CTEST_JOBS)
	@$(MAKE) --no-print-directory tsan

# Every test under ThreadSanitizer (tests/tsan.supp says what it cannot see), but the dashboard's
# browser test: the pages' server calls are the integration tests' (test_dashboard and others,
# run here), and a browser session under TSan costs minutes that the other two passes spend.
tsan: deps
	@scripts/install-deps.sh test
	@cmake -S . -B $(TSAN_BUILD) -DCMAKE_BUILD_TYPE=Debug -DKONNECT_TSAN=ON >/dev/null
	@cmake --build $(TSAN_BUILD) -j $(JOBS) -- --no-print-directory
	@cd $(TSAN_BUILD) && TSAN_OPTIONS=suppressions=$(CURDIR)/tests/tsan.supp:second_deadlock_stack=1 \
		ctest --output-on-failure -j $(CTEST_JOBS) -E '^browser_dashboard$$'

bench: build
	@scripts/install-deps.sh bench
	@bench/run.sh

fuzz: deps
	@scripts/install-deps.sh fuzz
	@CC=clang cmake -S . -B $(FUZZ_BUILD) -DCMAKE_BUILD_TYPE=Debug -DKONNECT_FUZZ=ON >/dev/null
	@cmake --build $(FUZZ_BUILD) -j $(JOBS) --target fuzz_bearer fuzz_chat_body fuzz_backend_stream \
		fuzz_backend_http
	@mkdir -p $(FUZZ_BUILD)/corpus/bearer $(FUZZ_BUILD)/corpus/chat_body $(FUZZ_BUILD)/corpus/backend_stream \
		$(FUZZ_BUILD)/corpus/backend_http
	$(FUZZ_BUILD)/tests/fuzz/fuzz_bearer -max_total_time=$(FUZZ_SECONDS) -max_len=512 \
		$(FUZZ_BUILD)/corpus/bearer tests/fuzz/corpus/bearer
	$(FUZZ_BUILD)/tests/fuzz/fuzz_chat_body -max_total_time=$(FUZZ_SECONDS) -max_len=70000 \
		$(FUZZ_BUILD)/corpus/chat_body tests/fuzz/corpus/chat_body
	$(FUZZ_BUILD)/tests/fuzz/fuzz_backend_stream -max_total_time=$(FUZZ_SECONDS) -max_len=8192 \
		$(FUZZ_BUILD)/corpus/backend_stream tests/fuzz/corpus/backend_stream
	$(FUZZ_BUILD)/tests/fuzz/fuzz_backend_http -max_total_time=$(FUZZ_SECONDS) -max_len=4096 \
		$(FUZZ_BUILD)/corpus/backend_http tests/fuzz/corpus/backend_http

format:
	@clang-format -i $$(git ls-files --cached --others --exclude-standard -- 'src/*.[ch]' \
		'tests/*.[ch]' 'bench/*.[ch]')

clean:
	rm -rf $(BUILD) $(ASAN_BUILD) $(TSAN_BUILD) $(FUZZ_BUILD)
