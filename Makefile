# rmqtt — developer entry points. `make test` is what CI runs (through .ci/run).

# This repository is also an OpenWrt feed (openwrt/Makefile). The SDK's feed scan reads every
# Makefile of a feed with DUMP=1; this one is not a package and must not build anything then.
ifneq ($(DUMP),)
all:
	@:
else

CARGO ?= cargo
PORT ?= 1883

.PHONY: all build release nossl install test test-unit deps run fmt lint clean bench persist-bench

all: build

build:
	$(CARGO) build --release

release: build
	@ls -l target/release/rmqtt

# Installs the release binary as $(PREFIX)/bin/rmqtt (DESTDIR for staging) with the applet
# names as symbolic links to it: rmqtt_pub, rmqtt_sub, rmqtt_rr, rmqtt_passwd.
PREFIX ?= /usr/local
APPLETS := rmqtt_pub rmqtt_sub rmqtt_rr rmqtt_passwd
install: build
	install -d $(DESTDIR)$(PREFIX)/bin
	install -m 0755 target/release/rmqtt $(DESTDIR)$(PREFIX)/bin/rmqtt
	for a in $(APPLETS); do ln -sf rmqtt $(DESTDIR)$(PREFIX)/bin/$$a; done

# The router variant without TLS.
nossl:
	$(CARGO) build --release --no-default-features

# Installs what the tests talk to (mosquitto, mosquitto-clients, paho-mqtt), then runs
# every test: codec and router unit tests, black-box tests against the real binary, and
# interoperability tests with third-party clients and brokers.
test: deps
	RMQTT_REQUIRE_INTEROP=1 $(CARGO) test --all-targets --no-fail-fast

test-unit:
	$(CARGO) test --lib

deps:
	scripts/install-deps.sh

# The broker with built-in defaults: local-only listener on 127.0.0.1/::1 port 1883.
run:
	$(CARGO) run --release -- -p $(PORT)

fmt:
	$(CARGO) fmt --all

# Side by side with Mosquitto (with and without set_tcp_nodelay) and rumqttd, alternating
# rounds: results/bench.{md,jsonl,png} (issues 5, 14). BENCH_ARGS=--parity: same limits for all.
# BENCH_ARGS=--quick for a one-minute run.
bench:
	sh scripts/bench.sh $(BENCH_ARGS)

# Persistence (issue 18): QoS 1 to an offline session with the journal on and off, the old
# snapshot-per-change setting and Mosquitto's; bytes written per message at 3,000, 12,000
# and 100,000; kill -9 and recovery; p99 of a paced stream during compaction with 100,000
# retained messages. Each run is bounded to PERSIST_LIMIT seconds (about 15 minutes in all).
PERSIST_LIMIT ?= 60
persist-bench: release
	python3 scripts/persist-bench.py --time-limit $(PERSIST_LIMIT) $(PERSIST_ARGS)

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets -- -D warnings

clean:
	$(CARGO) clean

# --- OpenWrt router builds and packages (openwrt/README.md) ---
# Static musl release binaries for mips, mipsel, armv7 and aarch64, with and without TLS, into
# dist/cross, plus a size table. Installs Debian's rustc-web/rust-web-src, qemu-user, zig
# (PyPI) and cargo-zigbuild on first use.
ARCH ?= mips_24kc
IPK_VARIANT ?= ssl

.PHONY: cross cross-test ipk router-test

cross:
	scripts/cross.sh

# The same builds, then each binary under qemu-user: broker, rmqtt_pub and rmqtt_sub pass a
# QoS 2 and a retained message over loopback.
cross-test:
	scripts/cross-test.sh

# The router-in-a-box test on the mips build under qemu-user (root; tests/router.rs).
router-test:
	scripts/router-test.sh $(ARCH)

# An installable .ipk for sideloading (`opkg install`), without the OpenWrt SDK:
#   make ipk ARCH=mips_24kc [IPK_VARIANT=nossl] [BINARY=path/to/rmqtt]
ipk:
	@set -e; \
	case "$(ARCH)" in \
	mipsel_*) t=mipsel ;; mips_*) t=mips ;; arm_*) t=armv7 ;; aarch64_*) t=aarch64 ;; \
	*) [ -n "$(BINARY)" ] || { echo "ipk: no cross target for ARCH=$(ARCH); give BINARY=" >&2; exit 2; } ;; \
	esac; \
	bin="$(BINARY)"; \
	if [ -z "$$bin" ]; then \
		scripts/cross.sh --targets $$t --variants $(IPK_VARIANT); \
		bin=dist/cross/$$t/$(IPK_VARIANT)/rmqtt; \
	fi; \
	name=rmqtt; [ "$(IPK_VARIANT)" = nossl ] && name=rmqtt-nossl; \
	IPK_NAME=$$name scripts/ipk.sh $(ARCH) "$$bin" dist

# --- Fuzzing (fuzz/, its own cargo package) ---
# Every fuzz target for FUZZ_SECONDS each, then executions per target. libFuzzer through
# cargo-fuzz when installed (FUZZ_INSTALL=1 installs it), else a coverage-less mutation loop.
FUZZ_SECONDS ?= 60

.PHONY: fuzz

fuzz:
	FUZZ_SECONDS=$(FUZZ_SECONDS) scripts/fuzz.sh

endif
