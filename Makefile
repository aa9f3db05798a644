SHELL := /bin/bash
# kvq build. `make` builds build/kvq and build/libkvq.a; `make test` runs the
# unit and golden tests; `make SAN=1 test` does it under ASan + UBSan;
# `make fuzz` builds the libFuzzer targets (clang).

CC      ?= cc
SAN     ?= 0
BUILD   ?= build
CFLAGS  ?= -O2 -g
CFLAGS  += -std=c11 -D_GNU_SOURCE -Wall -Wextra -Wno-unused-parameter -fopenmp -Iinclude -MMD -MP
LDLIBS  += -lcjson -lyaml -lutf8proc -llapacke -lopenblas -lm -lpthread
CLI_LIBS := -lmicrohttpd
LDFLAGS += -fopenmp

ifeq ($(TSAN),1)
BUILD   := build-tsan
CFLAGS  += -fsanitize=thread -fno-omit-frame-pointer
LDFLAGS += -fsanitize=thread
endif

ifeq ($(SAN),1)
BUILD   := build-san
CFLAGS  += -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
LDFLAGS += -fsanitize=address,undefined
endif

LIB_SRC  := $(sort $(wildcard src/*/*.c))
CLI_SRC  := $(sort $(wildcard tools/kvq/*.c tools/kvq/serve/*.c))
TEST_SRC := $(sort $(wildcard tests/unit/test_*.c))
LIB_OBJ  := $(LIB_SRC:%.c=$(BUILD)/obj/%.o)
CLI_OBJ  := $(CLI_SRC:%.c=$(BUILD)/obj/%.o)
TESTS    := $(TEST_SRC:tests/unit/%.c=$(BUILD)/tests/%)

all: $(BUILD)/kvq $(BUILD)/libkvq.a

$(BUILD)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c $< -o $@

$(BUILD)/libkvq.a: $(LIB_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(BUILD)/kvq: $(CLI_OBJ) $(BUILD)/libkvq.a
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS) $(CLI_LIBS)

$(BUILD)/tests/%: $(BUILD)/obj/tests/unit/%.o $(BUILD)/obj/tests/unit/testutil.o $(BUILD)/libkvq.a
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS) -lcmocka

$(BUILD)/obj/tests/unit/%.o: CFLAGS += -Isrc -Itests/unit
# the version `kvq --version` prints: the commit the binary was built from
$(BUILD)/obj/tools/kvq/main.o: CFLAGS += -DKVQ_VERSION='"$(shell git describe --always --dirty 2>/dev/null || echo unknown)"'

tests: $(TESTS) $(BUILD)/kvq

# Decode kernel rates in L2 and from DRAM (bench/kernel_rate.c; never in CI).
kernel-rate: $(BUILD)/kernel-rate
$(BUILD)/kernel-rate: bench/kernel_rate.c $(BUILD)/libkvq.a
	$(CC) $(CFLAGS) -Isrc $(LDFLAGS) -o $@ $^ $(LDLIBS)

# Unit tests (cmocka), the end-to-end golden tests against ../shared, then
# kvq serve on loopback (with the openai npm client and nginx).
test: tests
	@BUILD=$(BUILD) tests/run_unit.sh $(TESTS)
	@BUILD=$(BUILD) tests/golden/run.sh
	@BUILD=$(BUILD) tests/server/run.sh

FUZZ_SRC := $(sort $(wildcard tests/fuzz/fuzz_*.c))
FUZZERS  := $(FUZZ_SRC:tests/fuzz/%.c=build-fuzz/%)
build-fuzz/%: tests/fuzz/%.c $(LIB_SRC)
	@mkdir -p build-fuzz
	clang -std=c11 -D_GNU_SOURCE -g -O1 -fopenmp -Wno-pass-failed -Iinclude -Isrc -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined $^ -o $@ -lcjson -lyaml -lutf8proc -llapacke -lopenblas -lm -lpthread
# the server's request parser and chat templates live with the CLI
build-fuzz/fuzz_serve: tools/kvq/serve/request.c tools/kvq/serve/chat.c
fuzz: $(FUZZERS)

# Each fuzzer runs for FUZZ_SECONDS (CI smoke run), from its seeds
# (tests/fuzz/seeds/NAME, copied: libFuzzer adds to its corpus) and with its
# dictionary (tests/fuzz/NAME.dict) when it has them, else from nothing.
FUZZ_SECONDS ?= 30
fuzz-run: fuzz
	@for f in $(FUZZERS); do n=$$(basename $$f); echo "== $$f ($(FUZZ_SECONDS) s)"; \
	  rm -rf $$f.corpus; mkdir -p $$f.corpus; args=$$f.corpus; \
	  if [ -d tests/fuzz/seeds/$$n ]; then cp tests/fuzz/seeds/$$n/* $$f.corpus/; fi; \
	  if [ -f tests/fuzz/$$n.dict ]; then args="$$args -dict=tests/fuzz/$$n.dict"; fi; \
	  if ! $$f $$args -max_total_time=$(FUZZ_SECONDS) -rss_limit_mb=2048 -max_len=65536 > $$f.log 2>&1; then \
	    tail -n 40 $$f.log; echo "FUZZ FAILURE: $$f"; exit 1; fi; grep -E "^Done" $$f.log; done

# Contexts on one model in several threads, under ThreadSanitizer. The
# contexts run single-threaded, and so does the model load's repacking
# (OMP_NUM_THREADS=1: libgomp is not instrumented, so its own barriers would
# be reported); what is checked is that two contexts share nothing mutable.
tsan:
	$(MAKE) TSAN=1 build-tsan/tests/test_step
	OMP_NUM_THREADS=1 KVQ_TEST_FILTER=test_two_threads TSAN_OPTIONS="halt_on_error=1" build-tsan/tests/test_step

# Everything CI runs: tests, the same tests under ASan+UBSan, ThreadSanitizer
# on concurrent contexts, bounded fuzzing.
check:
	$(MAKE) test
	$(MAKE) SAN=1 test
	$(MAKE) tsan
	$(MAKE) fuzz-run

clean:
	rm -rf build build-san build-tsan build-fuzz

.PHONY: all tests test tsan fuzz fuzz-run check clean
.SECONDARY:

-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)
