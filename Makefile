# moat - one plain Makefile (no autotools).
#
#   make            build moatd, moatctl and moat-milter into build/
#   make run        install packages if missing, build, start moatd on
#                   127.0.0.1:2525 in front of a demo upstream (sample.conf)
#   make test       unit tests, fuzzers on their seeds, and integration
#                   tests against an ASan+UBSan build
#   make asan       the sanitizer build, into build-asan/
#   make fuzz       each libFuzzer target for FUZZ_SECONDS (default 300)
#   make bench      the benchmark (bench/run, features, milter), results in
#                   bench/RESULTS.md, FEATURES.md, MILTER.md; BASELINE_REF=REF
#                   also builds git ref REF and measures its moatd beside this one
#   make chaos      a sending Postfix delivers CHAOS_N (default 5000) messages
#                   through moatd to a receiving Postfix while faults are
#                   injected (tests/chaos/chaos.py; root; not part of test)
#   make install    PREFIX=/usr/local DESTDIR= : the programs, man pages,
#                   systemd units (UNITDIR) and, unless one is there, the
#                   production /etc/moat/moat.conf (debian/ packages it)

CC      ?= cc
PREFIX  ?= /usr/local
DESTDIR ?=
BUILD   ?= build
SAN     ?=

WARN    = -Wall -Wextra -Werror -Wshadow -Wmissing-prototypes -Wstrict-prototypes \
          -Wpointer-arith -Wformat=2 -Wno-format-nonliteral -Wcast-qual -Wvla
OPT     ?= -O2 -g
CFLAGS  := $(OPT) $(EXTRA_CFLAGS) -std=c11 -D_GNU_SOURCE $(WARN) -fstack-protector-strong -MMD -MP
ifeq ($(SAN),)
CFLAGS  += -D_FORTIFY_SOURCE=2
else
CFLAGS  += -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
LDFLAGS += -fsanitize=address,undefined
endif
# Include paths per directory: a file sees its own directory and those
# below it, top to bottom proxy|milter|tools -> engine -> policy ->
# filters -> redis -> core (DESIGN.md), so a wrong-way include fails the
# build; tests/ see everything. tests/check-layers names each one.
INC_core    = -Icore
INC_redis   = -Iredis $(INC_core)
INC_filters = -Ifilters $(INC_redis)
INC_policy  = -Ipolicy $(INC_filters)
INC_engine  = -Iengine $(INC_policy)
INC_proxy   = -Iproxy $(INC_engine)
INC_milter  = -Imilter $(INC_engine)
INC_tools   = -Itools $(INC_engine)
INC_bench   = $(INC_filters)
INC_tests   = -Iproxy -Imilter -Itools $(INC_engine)
LIBS    = -levent_openssl -levent -lunbound -lhiredis -lspf2 -lopendkim -lidn2 -lpsl \
          -lssl -lcrypto -lpthread
# sd_notify() for systemd's Type=notify: moatd and moat-milter only
SYSTEMD_LIBS = -lsystemd
UNITDIR ?= $(shell pkg-config --variable=systemdsystemunitdir systemd 2>/dev/null || echo /lib/systemd/system)

LIB_SRCS  = $(wildcard core/*.c policy/*.c filters/*.c redis/*.c engine/*.c) \
            $(filter-out proxy/main.c,$(wildcard proxy/*.c))
LIB_OBJS  = $(LIB_SRCS:%.c=$(BUILD)/%.o)
UNIT_SRCS = $(wildcard tests/unit/test_*.c)
UNIT_BINS = $(UNIT_SRCS:tests/unit/%.c=$(BUILD)/tests/%)
FUZZ_SRCS = $(wildcard tests/fuzz/fuzz_*.c)

.PHONY: all asan test unit fuzz fuzz-build fuzz-short integration bench chaos run install clean
all: $(BUILD)/moatd $(BUILD)/moatctl $(BUILD)/moat-milter

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(INC_$(firstword $(subst /, ,$<))) -c -o $@ $<

$(BUILD)/libmoat.a: $(LIB_OBJS)
	@rm -f $@
	ar rcs $@ $^

$(BUILD)/moatd: $(BUILD)/proxy/main.o $(BUILD)/libmoat.a
	$(CC) $(LDFLAGS) -o $@ $^ $(LIBS) $(SYSTEMD_LIBS)

# moat-milter: milter/*.c on libmilter (which needs -pthread)
MLT_OBJS  = $(patsubst %.c,$(BUILD)/%.o,$(wildcard milter/*.c))
$(BUILD)/moat-milter: $(MLT_OBJS) $(BUILD)/libmoat.a
	$(CC) $(LDFLAGS) -pthread -o $@ $^ -lmilter $(LIBS) $(SYSTEMD_LIBS)

# moatctl: tools/moatctl.c dispatches; tools/moatctl_*.c add subcommands
CTL_OBJS  = $(patsubst %.c,$(BUILD)/%.o,$(wildcard tools/moatctl*.c))
$(BUILD)/moatctl: $(CTL_OBJS) $(BUILD)/libmoat.a
	$(CC) $(LDFLAGS) -o $@ $^ $(LIBS)

# bench/features: the CPU of one DKIM signature (the floor of signing)
$(BUILD)/dkim-sign-bench: $(BUILD)/bench/dkim_sign_bench.o $(BUILD)/libmoat.a
	$(CC) $(LDFLAGS) -o $@ $^ $(LIBS)

$(BUILD)/tests/%: $(BUILD)/tests/unit/%.o $(BUILD)/libmoat.a
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(LIBS)

asan:
	$(MAKE) BUILD=build-asan SAN=1 OPT="-O1 -g" all unit-bins

unit-bins: $(UNIT_BINS)

# Unit tests; tests/run-unit prints one "N passed, N failed" line per file.
unit: unit-bins
	@tests/run-unit $(UNIT_BINS)

# libFuzzer targets: clang, ASan+UBSan, each harness linked with the
# pure parser sources it names in its first line ("// sources: a.c b.c"),
# and the libraries a second line may name ("// libs: -lidn2").
FUZZ_BUILD = build-fuzz
FUZZ_CFLAGS = -std=c11 -D_GNU_SOURCE -g -O1 -fsanitize=fuzzer,address,undefined \
              $(INC_tests)
fuzz-build:
	@mkdir -p $(FUZZ_BUILD)
	@for f in $(FUZZ_SRCS); do \
	  n=$$(basename $$f .c); \
	  srcs=$$(sed -n '1s,^// sources: ,,p' $$f); \
	  libs=$$(sed -n '2s,^// libs: ,,p' $$f); \
	  clang $(FUZZ_CFLAGS) -o $(FUZZ_BUILD)/$$n $$f $$srcs $$libs || exit 1; \
	done

FUZZ_SECONDS ?= 300
fuzz: fuzz-build
	@tests/run-fuzz $(FUZZ_BUILD) $(FUZZ_SECONDS)

fuzz-short: fuzz-build
	@tests/run-fuzz $(FUZZ_BUILD) $${FUZZ_SHORT_SECONDS:-20} 1

integration: asan
	@MOATD=$(CURDIR)/build-asan/moatd MOATCTL=$(CURDIR)/build-asan/moatctl \
	  tests/run-integration

test:
	@tools/install-deps all
	@tests/run-all

chaos: all
	@tests/chaos/chaos.py -n $${CHAOS_N:-5000}

bench: all $(BUILD)/dkim-sign-bench
	@bench/run $(if $(BASELINE_REF),--baseline-ref '$(BASELINE_REF)')
	@bench/features $(if $(BASELINE_REF),--baseline-ref '$(BASELINE_REF)')
	@bench/milter
	@bench/policy
	@bench/mix

# make run PORT=2525 UPSTREAM_PORT=10025
run:
	@PORT='$(PORT)' UPSTREAM_PORT='$(UPSTREAM_PORT)' tools/run-demo

install: all
	install -d $(DESTDIR)$(PREFIX)/sbin $(DESTDIR)$(PREFIX)/bin \
	  $(DESTDIR)$(PREFIX)/share/man/man5 $(DESTDIR)$(PREFIX)/share/man/man8 \
	  $(DESTDIR)/etc/moat $(DESTDIR)$(UNITDIR)
	install -m 755 $(BUILD)/moatd $(DESTDIR)$(PREFIX)/sbin/moatd
	install -m 755 $(BUILD)/moatctl $(DESTDIR)$(PREFIX)/bin/moatctl
	install -m 755 $(BUILD)/moat-milter $(DESTDIR)$(PREFIX)/sbin/moat-milter
	install -m 644 docs/moatd.8 docs/moatctl.8 docs/moat-milter.8 $(DESTDIR)$(PREFIX)/share/man/man8/
	install -m 644 docs/moat.conf.5 $(DESTDIR)$(PREFIX)/share/man/man5/moat.conf.5
	for u in moatd moat-milter; do \
	  sed 's,/usr/sbin/,$(PREFIX)/sbin/,g' systemd/$$u.service >$(DESTDIR)$(UNITDIR)/$$u.service; \
	  chmod 644 $(DESTDIR)$(UNITDIR)/$$u.service; \
	done
	test -e $(DESTDIR)/etc/moat/moat.conf || \
	  install -m 644 moat.conf $(DESTDIR)/etc/moat/moat.conf

clean:
	rm -rf build build-asan build-fuzz

-include $(shell find build build-asan -name '*.d' 2>/dev/null)
