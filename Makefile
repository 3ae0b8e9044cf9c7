# rmqtt — developer entry points. `make test` is what CI runs (through .ci/run).

CARGO ?= cargo
PORT ?= 1883

.PHONY: all build release nossl test test-unit deps run fmt lint clean

all: build

build:
	$(CARGO) build --release

release: build
	@ls -l target/release/rmqtt

# The router variant without TLS.
nossl:
	$(CARGO) build --release --no-default-features

# Installs what the tests talk to (mosquitto, mosquitto-clients, paho-mqtt), then runs
# every test: codec and router unit tests, black-box tests against the real binary, and
# interoperability tests with third-party clients and brokers.
test: deps
	RMQTT_REQUIRE_INTEROP=1 $(CARGO) test --all-targets

test-unit:
	$(CARGO) test --lib

deps:
	scripts/install-deps.sh

# The broker with built-in defaults: local-only listener on 127.0.0.1/::1 port 1883.
run:
	$(CARGO) run --release -- -p $(PORT)

fmt:
	$(CARGO) fmt --all

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets -- -D warnings

clean:
	$(CARGO) clean
