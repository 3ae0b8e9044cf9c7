#!/bin/sh
# Runs every fuzz target in fuzz/ for a bounded time and prints the executions per target.
#
#   scripts/fuzz.sh [TARGET...]        (or: make fuzz FUZZ_SECONDS=N)
#
# Engine: libFuzzer through cargo-fuzz (with AddressSanitizer, RUSTC_BOOTSTRAP=1 on a stable
# toolchain) when `cargo fuzz` is installed; otherwise, or with FUZZ_ENGINE=mutate, the
# coverage-less mutation loop in fuzz/src/bin/mutate.rs. FUZZ_INSTALL=1 installs cargo-fuzz
# from crates.io first. The checked-in seeds in fuzz/corpus/<target> are only read; what a run
# discovers goes to FUZZ_WORK (default $TMPDIR/rmqtt-fuzz). Crashes are written to
# fuzz/artifacts/<target>/ and make the script exit 1 after every target has run.
set -eu

FUZZ_SECONDS=${FUZZ_SECONDS:-60}
FUZZ_ENGINE=${FUZZ_ENGINE:-auto}
FUZZ_WORK=${FUZZ_WORK:-${TMPDIR:-/tmp}/rmqtt-fuzz}
ALL="decode_v311 decode_v5 mosquitto_config uci_config password_file acl_file persist_snapshot mosquitto_db ws_frames x509_subject"
TARGETS=${*:-$ALL}

cd "$(dirname "$0")/../fuzz"

if [ "$FUZZ_ENGINE" = auto ]; then
	if ! cargo fuzz --version >/dev/null 2>&1 && [ "${FUZZ_INSTALL:-0}" = 1 ]; then
		cargo install cargo-fuzz --locked || true
	fi
	if cargo fuzz --version >/dev/null 2>&1; then
		FUZZ_ENGINE=libfuzzer
	else
		FUZZ_ENGINE=mutate
	fi
fi

if [ "$FUZZ_ENGINE" = libfuzzer ]; then
	# cargo-fuzz passes -Zsanitizer; RUSTC_BOOTSTRAP lets a stable compiler accept it.
	export RUSTC_BOOTSTRAP=1
	for t in $TARGETS; do
		cargo fuzz build -O "$t"
	done
else
	cargo build --release --no-default-features --bin mutate
	mutate_bin=$(cargo metadata --format-version 1 --no-deps |
		sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')/release/mutate
fi

summary=""
failed=0
for t in $TARGETS; do
	mkdir -p "$FUZZ_WORK/$t" "artifacts/$t"
	log="$FUZZ_WORK/$t.log"
	echo "== $t: $FUZZ_SECONDS s ($FUZZ_ENGINE)"
	status=0
	if [ "$FUZZ_ENGINE" = libfuzzer ]; then
		cargo fuzz run -O "$t" "$FUZZ_WORK/$t" "corpus/$t" -- \
			-max_total_time="$FUZZ_SECONDS" -timeout=10 -print_final_stats=1 \
			-artifact_prefix="artifacts/$t/" >"$log" 2>&1 || status=$?
		execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
	else
		"$mutate_bin" "$t" "$FUZZ_SECONDS" "corpus/$t" >"$log" 2>&1 || status=$?
		execs=$(sed -n "s/^$t: \([0-9]*\) executions.*/\1/p" "$log" | tail -n 1)
	fi
	if [ "$status" -ne 0 ]; then
		failed=1
		echo "!! $t FAILED (exit $status); last lines of $log:"
		tail -n 30 "$log"
		summary="$summary$(printf '%-18s %12s  CRASH (see fuzz/artifacts/%s)' "$t" "${execs:-?}" "$t")
"
	else
		summary="$summary$(printf '%-18s %12s  ok' "$t" "${execs:-?}")
"
	fi
done

echo
echo "fuzz summary ($FUZZ_ENGINE, $FUZZ_SECONDS s per target): target, executions, result"
printf '%s' "$summary"
exit $failed
