# agora — build, run, test, bench.  See README.md.
#   make / make build   build build/agora and the test support binaries
#   make run            install missing Debian packages, build, run `agora up`
#   make test           install missing packages, build, run unit + integration + browser tests
#   make bench          run the benchmarks (bench/run.sh)
CC      ?= cc
PKGS    := sqlite3 libsodium jansson inih libpq
PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   := $(shell pkg-config --libs $(PKGS) 2>/dev/null)
OPT     ?= -O2 -g
CFLAGS  ?= $(OPT)
CFLAGS  += -std=gnu11 -Wall -Wextra -Werror -Wno-unused-parameter -D_GNU_SOURCE -pthread -Isrc $(PKG_CFLAGS)
LDLIBS  += $(PKG_LIBS) -pthread -lm
BUILD   ?= build

SRCS     := $(sort $(wildcard src/core/*.c src/http/*.c src/lb/*.c src/app/*.c src/cli/*.c))
LIB_SRCS := $(filter-out src/cli/main.c,$(SRCS))
OBJS     := $(SRCS:%.c=$(BUILD)/obj/%.o)
LIB_OBJS := $(LIB_SRCS:%.c=$(BUILD)/obj/%.o)
UNIT_SRCS := $(sort $(wildcard tests/unit/test_*.c))
UNIT_BINS := $(UNIT_SRCS:tests/unit/%.c=$(BUILD)/tests/%)
SUPPORT_SRCS := $(sort $(wildcard tests/support/*.c))
SUPPORT_BINS := $(SUPPORT_SRCS:tests/support/%.c=$(BUILD)/%)

.PHONY: all build run test unit integration browser bench deps deps-test clean format asan fuzz

all build: $(BUILD)/agora $(SUPPORT_BINS)

$(BUILD)/agora: $(OBJS)
	$(CC) $(CFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -MMD -MP -c -o $@ $<

$(BUILD)/libagora.a: $(LIB_OBJS)
	rm -f $@ && ar rcs $@ $^

$(BUILD)/tests/%: tests/unit/%.c $(BUILD)/libagora.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -Itests/unit -o $@ $< $(BUILD)/libagora.a $(LDLIBS) $(shell pkg-config --libs cmocka 2>/dev/null)

$(BUILD)/%: tests/support/%.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -o $@ $< -pthread

-include $(OBJS:.o=.d)

deps:
	@sh scripts/install-deps.sh

deps-test:
	@sh scripts/install-deps.sh test

run: deps
	@$(MAKE) --no-print-directory build
	$(BUILD)/agora up

unit: $(UNIT_BINS)
	@sh scripts/run-unit.sh $(UNIT_BINS)

integration: build
	@sh scripts/run-integration.sh

browser: build
	@sh scripts/run-browser.sh

test: deps-test
	@$(MAKE) --no-print-directory build
	@$(MAKE) --no-print-directory unit
	@$(MAKE) --no-print-directory integration
	@$(MAKE) --no-print-directory browser

bench: deps
	@$(MAKE) --no-print-directory build
	bash bench/run.sh

format:
	clang-format -i $(SRCS) $(wildcard src/*/*.h) $(UNIT_SRCS) $(SUPPORT_SRCS)

clean:
	rm -rf $(BUILD) build-asan
