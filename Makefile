# agora — build, run, test, bench.  See README.md.
#   make / make build   build build/agora and the test support binaries
#   make run            install missing Debian packages, build, run `agora up`
#   make test           install missing packages, build, check formatting, run unit + integration +
#                       browser tests, then the ASan, TSan and fuzzing runs
#   make bench          run the benchmarks (bench/run.sh)
#   make unit-postgres  the store contract suite on PostgreSQL (make unit runs it on SQLite)
#   make integration-postgres  the API suites again on PostgreSQL (make test runs both)
#   make integration-replica   the API suites again with a read replica (--db-replica on a standby)
#   make cluster-test   tests/cluster: the platform on network-namespace hosts (root; skips otherwise)
CC      ?= cc
PKGS    := sqlite3 libsodium jansson inih libpq libssl libcrypto libnghttp2
PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   := $(shell pkg-config --libs $(PKGS) 2>/dev/null)
OPT     ?= -O2 -g
CFLAGS  ?= $(OPT)
CFLAGS  += -std=gnu11 -Wall -Wextra -Werror -Wno-unused-parameter -D_GNU_SOURCE -pthread -Isrc $(PKG_CFLAGS)
LDLIBS  += $(PKG_LIBS) -pthread -lm
BUILD   ?= build
# `make test` compiles its builds (plain, ASan, TSan, fuzz) with this many jobs; the suites run as before.
JOBS    ?= $(shell nproc 2>/dev/null || echo 1)

SRCS     := $(sort $(wildcard src/core/*.c src/http/*.c src/lb/*.c src/app/*.c src/cli/*.c))
LIB_SRCS := $(filter-out src/cli/main.c,$(SRCS))
OBJS     := $(SRCS:%.c=$(BUILD)/obj/%.o)
LIB_OBJS := $(LIB_SRCS:%.c=$(BUILD)/obj/%.o)
# Unit tests mirror src/ (tests/unit/core/test_buf.c tests src/core/buf.c); a test still at the top
# of tests/unit is built too. tests/unit/X/test_Y.c becomes $(BUILD)/tests/X/test_Y.
UNIT_SRCS := $(sort $(wildcard tests/unit/test_*.c tests/unit/*/test_*.c))
UNIT_HDRS := $(wildcard tests/unit/*.h tests/unit/*/*.h)
UNIT_BINS := $(UNIT_SRCS:tests/unit/%.c=$(BUILD)/tests/%)
SUPPORT_SRCS := $(sort $(wildcard tests/support/*.c))
SUPPORT_BINS := $(SUPPORT_SRCS:tests/support/%.c=$(BUILD)/%)
FORMAT_SRCS  := $(SRCS) $(wildcard src/*/*.h) $(UNIT_SRCS) $(UNIT_HDRS) $(SUPPORT_SRCS) $(wildcard tests/fuzz/*.c) bench/idlehold.c bench/openloop.c bench/tlsload.c

.PHONY: all build run test test-suites unit unit-postgres integration integration-postgres integration-replica browser bench deps deps-test clean format format-check asan tsan fuzz

all build: $(BUILD)/agora $(SUPPORT_BINS) $(BUILD)/idlehold $(BUILD)/openloop $(BUILD)/tlsload

$(BUILD)/agora: $(OBJS)
	$(CC) $(CFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -MMD -MP -c -o $@ $<

$(BUILD)/libagora.a: $(LIB_OBJS)
	rm -f $@ && ar rcs $@ $^

# -Itests/unit/lb: lb_test.h (in tests/unit/lb) is also found from a test at the top level.
$(BUILD)/tests/%: tests/unit/%.c $(UNIT_HDRS) $(BUILD)/libagora.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -Itests/unit -Itests/unit/lb -o $@ $< $(BUILD)/libagora.a $(LDLIBS) $(shell pkg-config --libs cmocka 2>/dev/null) $(UNIT_LDFLAGS)

# test_loop counts the loop's yields on a fake clock: sched_yield, clock_gettime and epoll_wait
# are wrapped.
UNIT_LDFLAGS :=
$(BUILD)/tests/core/test_loop: UNIT_LDFLAGS = -Wl,--wrap=sched_yield -Wl,--wrap=clock_gettime -Wl,--wrap=epoll_wait

$(BUILD)/%: tests/support/%.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -o $@ $< -pthread

# The idle-connection holder of bench/idle.sh.
$(BUILD)/idlehold: bench/idlehold.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -o $@ $<
# The open-loop load generator of the benchmarks (bench/openloop.sh, bench/tls.sh); libc and OpenSSL.
$(BUILD)/openloop: bench/openloop.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -o $@ $< -lssl -lcrypto -lm
# The TLS handshake load generator of bench/tls.sh (full and resumed handshakes); OpenSSL only.
$(BUILD)/tlsload: bench/tlsload.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -o $@ $< -lssl -lcrypto

-include $(OBJS:.o=.d)

# The dashboard's page is compiled into agora lb (.incbin in src/lb/dashboard.c).
$(BUILD)/obj/src/lb/dashboard.o: $(wildcard src/lb/dashboard/*)

deps:
	@sh scripts/install-deps.sh

deps-test:
	@sh scripts/install-deps.sh test

run: deps
	@$(MAKE) --no-print-directory build
	$(BUILD)/agora up

unit: $(UNIT_BINS)
	@sh scripts/run-unit.sh $(UNIT_BINS)

# The store contract suite (tests/unit/app/test_store.c, which `make unit` runs on SQLite) on
# PostgreSQL: on the cluster AGORA_TEST_PG names, or on a private one scripts/with-pg.sh starts and
# destroys. Any single run: AGORA_TEST_DB_URL=postgresql://... $(BUILD)/tests/app/test_store
unit-postgres: $(BUILD)/tests/app/test_store
	@sh scripts/with-pg.sh sh -c 'AGORA_TEST_DB_URL=$$AGORA_TEST_PG exec "$$0"' $(BUILD)/tests/app/test_store

# The API suites, the idempotency crash test and the login flood again, on PostgreSQL (each
# cluster of servers on a fresh database of AGORA_TEST_PG's cluster, or of a private one).
PG_SUITES := $(sort $(wildcard tests/integration/test_api_*.py)) tests/integration/test_ft_idempotent.py \
	tests/integration/test_ft_login_flood.py tests/integration/test_pg_review_cut2.py
integration-postgres: build
	@sh scripts/with-pg.sh env AGORA_TEST_STORE=postgres sh scripts/run-integration.sh $(PG_SUITES)

# The API suites once more with read replicas: api_cluster's servers read from a streaming standby
# of the cluster (--db-replica; conftest.py's pg_standby), and the test clients send back the
# newest Agora-Position they were given, as a browser's cookie jar does.
integration-replica: build
	@sh scripts/with-pg.sh env AGORA_TEST_STORE=postgres AGORA_TEST_REPLICA=1 sh scripts/run-integration.sh \
		$(sort $(wildcard tests/integration/test_api_*.py))

integration: build
	@sh scripts/run-integration.sh

browser: build
	@sh scripts/run-browser.sh

# The namespace cluster (scripts/cluster.sh): needs root, ip netns, keepalived; skipped with the reason otherwise.
.PHONY: cluster-test
cluster-test: build
	@/usr/bin/python3 -m pytest -q -rs tests/cluster

# One PostgreSQL (scripts/with-pg.sh) serves every suite of the run; it is destroyed at the end.
test: deps-test
	@$(MAKE) --no-print-directory -j$(JOBS) build $(UNIT_BINS)
	@$(MAKE) --no-print-directory format-check
	@sh scripts/with-pg.sh $(MAKE) --no-print-directory test-suites

# The namespace cluster's tests (mostly waiting: fail-overs, keepalived, pg_auto_failover) run
# beside the ASan suite, their output kept in build/cluster-test.log and shown when both are done.
test-suites:
	@$(MAKE) --no-print-directory unit
	@$(MAKE) --no-print-directory unit-postgres
	@$(MAKE) --no-print-directory integration
	@$(MAKE) --no-print-directory integration-postgres
	@$(MAKE) --no-print-directory integration-replica
	@$(MAKE) --no-print-directory browser
	@echo "cluster-test: running beside asan (output at the end: build/cluster-test.log)"; \
	$(MAKE) --no-print-directory cluster-test >build/cluster-test.log 2>&1 & cpid=$$!; \
	$(MAKE) --no-print-directory asan; a=$$?; \
	wait $$cpid; c=$$?; echo "---- cluster-test (exit $$c) ----"; cat build/cluster-test.log; \
	[ $$a -eq 0 ] && [ $$c -eq 0 ]
	@$(MAKE) --no-print-directory tsan
	@$(MAKE) --no-print-directory fuzz-smoke

# ---- sanitizers and fuzzing ----
#   make asan        builds agora, testbackend and the unit tests with ASan+UBSan into build-asan/
#                    (same rules, BUILD=build-asan), runs the unit tests there, then (even if a unit
#                    test failed) the integration suite against build-asan/agora (AGORA_BIN). The
#                    suite always starts build/testbackend (conftest has no variable for it), so
#                    test_testbackend.py, which tests only that helper, is left out; so are the files
#                    of ASAN_SKIP, whose time goes to waiting on PostgreSQL's failovers and outages or
#                    to tools (systemd-analyze, nftables, a benchmark), not to agora's memory
#                    handling: the plain integration run of `make test` runs them.
#   make fuzz        builds the libFuzzer harnesses tests/fuzz/fuzz_*.c with clang into build-fuzz/
#                    (the library compiled with the same sanitizers) and runs each for FUZZ_SECONDS;
#                    new inputs go to build-fuzz/corpus/NAME, crashes to build-fuzz/crashes/NAME/,
#                    output to build-fuzz/fuzz_NAME.log. The checked-in seeds (tests/fuzz/corpus/NAME)
#                    are only read.
#   make fuzz-smoke  the same, 6 seconds per harness (part of `make test`).
#   make tsan        builds agora, testbackend and the unit tests with ThreadSanitizer into build-tsan/,
#                    runs the unit tests, then tests/tsan/load.py (TSAN_SECONDS of load: `agora lb`
#                    with 2 workers under wrk with admin calls and a SIGHUP reload, then `agora server`
#                    with concurrent API users). Fails on a failed test or on any TSan report (written
#                    to build-tsan/reports/ and printed). tests/tsan/suppressions.txt may only name
#                    third-party code: a race in ours is fixed, not suppressed.
ASAN_OPT     := -O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer
ASAN_SKIP    := test_pg_failover.py test_review14_pg_secrets.py test_ft_pg_outage.py test_up_postgres.py \
                test_deploy.py test_bench_openloop.py
SAN_ENV      := ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
FUZZ_SECONDS ?= 60
FUZZ_CC      ?= clang
FUZZ_OPT     := -O1 -g -fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer
FUZZ_NAMES   := $(patsubst tests/fuzz/fuzz_%.c,%,$(sort $(wildcard tests/fuzz/fuzz_*.c)))
TSAN_OPT     := -O1 -g -fsanitize=thread -fno-omit-frame-pointer
TSAN_SECONDS ?= 6
TSAN_ENV     := TSAN_OPTIONS="log_path=$(CURDIR)/build-tsan/reports/tsan halt_on_error=0 second_deadlock_stack=1 \
	suppressions=$(CURDIR)/tests/tsan/suppressions.txt"

.PHONY: fuzz-build fuzz-smoke

asan:
	@$(MAKE) --no-print-directory -j$(JOBS) BUILD=build-asan OPT="$(ASAN_OPT)" build $(UNIT_BINS:$(BUILD)/%=build-asan/%)
	@$(MAKE) --no-print-directory BUILD=build build/testbackend
	@fail=0; \
	$(SAN_ENV) $(MAKE) --no-print-directory BUILD=build-asan OPT="$(ASAN_OPT)" unit || fail=1; \
	echo "asan: integration tests against build-asan/agora"; \
	$(SAN_ENV) AGORA_BIN=$(CURDIR)/build-asan/agora sh scripts/run-integration.sh \
		$(patsubst %,--ignore=tests/integration/%,test_testbackend.py $(ASAN_SKIP)) || fail=1; \
	exit $$fail

tsan:
	@$(MAKE) --no-print-directory -j$(JOBS) BUILD=build-tsan OPT="$(TSAN_OPT)" build $(UNIT_BINS:$(BUILD)/%=build-tsan/%)
	@rm -rf build-tsan/reports && mkdir -p build-tsan/reports
	@fail=0; \
	$(TSAN_ENV) $(MAKE) --no-print-directory BUILD=build-tsan OPT="$(TSAN_OPT)" unit || fail=1; \
	echo "tsan: load test against build-tsan/agora"; \
	$(TSAN_ENV) /usr/bin/python3 tests/tsan/load.py build-tsan $(TSAN_SECONDS) || fail=1; \
	if ls build-tsan/reports/tsan.* >/dev/null 2>&1; then \
		fail=1; echo "FAILED: ThreadSanitizer reports (build-tsan/reports/):"; cat build-tsan/reports/tsan.*; \
	fi; \
	[ $$fail -eq 0 ] && echo "tsan: no reports"; exit $$fail

fuzz-build:
	@$(MAKE) --no-print-directory -j$(JOBS) BUILD=build-fuzz CC=$(FUZZ_CC) OPT="$(FUZZ_OPT) -fsanitize=fuzzer-no-link" \
		build-fuzz/libagora.a
	@for n in $(FUZZ_NAMES); do \
		echo "$(FUZZ_CC) ... -o build-fuzz/fuzz_$$n tests/fuzz/fuzz_$$n.c build-fuzz/libagora.a"; \
		$(FUZZ_CC) $(FUZZ_OPT) -fsanitize=fuzzer -std=gnu11 -Wall -Wextra -Werror -D_GNU_SOURCE -Isrc \
			$(PKG_CFLAGS) -o build-fuzz/fuzz_$$n tests/fuzz/fuzz_$$n.c build-fuzz/libagora.a $(LDLIBS) || exit 1; \
	done

fuzz: fuzz-build
	@fail=0; for n in $(FUZZ_NAMES); do \
		mkdir -p build-fuzz/corpus/$$n build-fuzz/crashes/$$n; \
		if $(SAN_ENV) build-fuzz/fuzz_$$n -max_total_time=$(FUZZ_SECONDS) -timeout=10 -print_final_stats=1 \
			-artifact_prefix=build-fuzz/crashes/$$n/ build-fuzz/corpus/$$n tests/fuzz/corpus/$$n \
			>build-fuzz/fuzz_$$n.log 2>&1; then \
			echo "fuzz_$$n: ok, $$(grep -o 'stat::number_of_executed_units: *[0-9]*' build-fuzz/fuzz_$$n.log \
				| grep -o '[0-9]*$$') runs in $(FUZZ_SECONDS) s"; \
		else \
			fail=1; echo "FAILED: fuzz_$$n (build-fuzz/fuzz_$$n.log; reproducer in build-fuzz/crashes/$$n/)"; \
			tail -n 60 build-fuzz/fuzz_$$n.log; \
		fi; \
	done; exit $$fail

fuzz-smoke:
	@$(MAKE) --no-print-directory fuzz FUZZ_SECONDS=6

bench: deps
	@$(MAKE) --no-print-directory build
	bash bench/run.sh

format:
	clang-format -i $(FORMAT_SRCS)

# Fails, naming file and line, if a C file is not as .clang-format says (`make format` fixes it).
format-check:
	@clang-format --dry-run -Werror $(FORMAT_SRCS) && echo "format-check: $(words $(FORMAT_SRCS)) files ok"

clean:
	rm -rf $(BUILD) build-asan build-fuzz build-tsan
