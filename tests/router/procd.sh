# Stand-in for OpenWrt's /lib/functions/procd.sh, for the router-in-a-box test
# (tests/router.rs). The shell API is the real one; where procd.sh builds JSON and calls
# `ubus call service set|delete|signal`, this writes the same message as lines (fields
# separated by \037) into $PROCD_SPOOL and waits until the procd stand-in (Rust, in the test)
# has acted on it, as the synchronous ubus call does.

PROCD_SPOOL="${PROCD_SPOOL:-/var/run/procd-standin}"
_procd_msg=
_procd_seq=0

_procd_line() { # FIELDS...
	local IFS="$(printf '\037')"
	printf '%s\n' "$*" >>"$_procd_msg"
}

_procd_call() { # send the message and wait for procd's answer
	local req="$PROCD_SPOOL/req.$$.$_procd_seq" n=0
	_procd_seq=$((_procd_seq + 1))
	mv "$_procd_msg" "$req"
	while [ ! -e "$req.done" ]; do
		n=$((n + 1))
		[ $n -gt 600 ] && { echo "procd stand-in did not answer" >&2; return 1; }
		sleep 0.05
	done
	rm -f "$req.done"
	_procd_msg=
}

_procd_new() {
	mkdir -p "$PROCD_SPOOL"
	_procd_msg="$PROCD_SPOOL/msg.$$"
	: >"$_procd_msg"
}

procd_lock() { :; }

procd_open_service() {
	_procd_new
	_PROCD_INSTANCE_SEQ=0
	_procd_line service "$1" "$2"
}

procd_close_service() {
	service_triggers
	_procd_line method "${1:-set}"
	_procd_call
}

procd_open_instance() {
	_PROCD_INSTANCE_SEQ=$((_PROCD_INSTANCE_SEQ + 1))
	_procd_line instance "${1:-instance$_PROCD_INSTANCE_SEQ}"
}

procd_set_param() {
	local type="$1"; shift
	case "$type" in
	reload_signal) _procd_line param "$type" "$(kill -l "$1")" ;;
	*) _procd_line param "$type" "$@" ;;
	esac
}

procd_append_param() {
	local type="$1"; shift
	_procd_line append "$type" "$@"
}

procd_close_instance() {
	_procd_line end
}

procd_add_mdns() { # SERVICE PROTO PORT [TXT...]
	local service="$1" proto="$2" port="$3"; shift 3
	_procd_line mdns "_$service._$proto.local" "$port" "$@"
}

procd_add_reload_trigger() {
	local script name file
	script=$(readlink "$initscript")
	name=$(basename ${script:-$initscript})
	for file in "$@"; do
		_procd_line trigger config.change "$file" "/etc/init.d/$name" reload
	done
}

procd_kill() { # SERVICE [INSTANCE]
	_procd_new
	_procd_line delete "$1" "$2"
	_procd_call
}

procd_send_signal() { # SERVICE [INSTANCE] [SIGNAL]
	local signal="$3"
	case "$signal" in
	[A-Z]*) signal="$(kill -l "$signal" 2>/dev/null)" || return 1 ;;
	esac
	[ "$2" = "*" ] && set -- "$1" "" "$3"
	_procd_new
	_procd_line signal "$1" "$2" "${signal:-1}"
	_procd_call
}

procd_running() {
	local service="$1"
	[ -e "$PROCD_SPOOL/running.$service" ]
}
