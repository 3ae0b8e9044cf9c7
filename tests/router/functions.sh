# Stand-in for OpenWrt's /lib/functions.sh, for the router-in-a-box test (tests/router.rs).
# The UCI part behaves as the real one: config_load turns the package into calls of
# `config TYPE NAME`, `option NAME VALUE` and `list NAME VALUE` (as `uci export` and
# uci_load do; anonymous sections get generated names), and config_get, config_get_bool,
# config_foreach and config_list_foreach read the CONFIG_<section>_<option> variables.

LIST_SEP=" "

append() {
	local var="$1" value="$2" sep="${3:- }"
	eval "$var=\${$var:+\${$var}\${value:+\$sep}}\$value"
}

list_contains() {
	local var="$1" str="$2" val
	eval "val=\" \${$var} \""
	[ "${val%% $str *}" != "$val" ]
}

config_set() {
	local section="$1" option="$2" value="$3"
	eval "CONFIG_${section}_${option}=\$value"
}

config() {
	local cfgtype="$1" name="$2"
	CONFIG_NUM_SECTIONS=$((CONFIG_NUM_SECTIONS + 1))
	name="${name:-cfg$CONFIG_NUM_SECTIONS}"
	append CONFIG_SECTIONS "$name"
	CONFIG_SECTION="$name"
	config_set "$CONFIG_SECTION" "TYPE" "$cfgtype"
}

option() {
	local varname="$1"; shift
	config_set "$CONFIG_SECTION" "$varname" "$*"
}

list() {
	local varname="$1"; shift
	local value="$*" len
	config_get len "$CONFIG_SECTION" "${varname}_LENGTH" 0
	len=$((len + 1))
	config_set "$CONFIG_SECTION" "${varname}_ITEM$len" "$value"
	config_set "$CONFIG_SECTION" "${varname}_LENGTH" "$len"
	append "CONFIG_${CONFIG_SECTION}_${varname}" "$value" "$LIST_SEP"
}

config_unset_all() {
	local s
	for s in $CONFIG_SECTIONS; do
		for v in $(set | sed -n "s/^\(CONFIG_${s}_[A-Za-z0-9_]*\)=.*/\1/p"); do
			unset "$v"
		done
	done
	CONFIG_SECTIONS=
	CONFIG_NUM_SECTIONS=0
	CONFIG_SECTION=
}

# UCI file syntax: 'literal', "escaped", bare words; # comments.
_uci_to_shell() {
	awk '
	function q(s) { gsub(/\047/, "\047\\\047\047", s); return "\047" s "\047" }
	function word(   c, w) {
		w = ""
		while (pos <= length(line)) {
			c = substr(line, pos, 1)
			if (c ~ /[ \t]/ && !inq) break
			if (c == "\047") {
				pos++
				while (pos <= length(line) && substr(line, pos, 1) != "\047") { w = w substr(line, pos, 1); pos++ }
				pos++; continue
			}
			if (c == "\"") {
				pos++
				while (pos <= length(line) && substr(line, pos, 1) != "\"") {
					c = substr(line, pos, 1)
					if (c == "\\") { pos++; c = substr(line, pos, 1) }
					w = w c; pos++
				}
				pos++; continue
			}
			if (c == "#") { pos = length(line) + 1; break }
			w = w c; pos++
		}
		return w
	}
	{
		line = $0; pos = 1; n = 0
		while (pos <= length(line)) {
			while (pos <= length(line) && substr(line, pos, 1) ~ /[ \t]/) pos++
			if (pos > length(line) || substr(line, pos, 1) == "#") break
			n++; f[n] = word()
		}
		if (n == 0) next
		if (f[1] == "config") print "config " q(f[2]) " " q(f[3])
		else if (f[1] == "option") print "option " q(f[2]) " " q(f[3])
		else if (f[1] == "list") print "list " q(f[2]) " " q(f[3])
	}' "$1"
}

config_load() {
	local file="${UCI_CONFIG_DIR:-/etc/config}/$1"
	config_unset_all
	[ -f "$file" ] || return 1
	eval "$(_uci_to_shell "$file")"
}

config_get() {
	case "$3" in
	"") eval echo "\"\${CONFIG_${1}_${2}:-\${3}}\"" ;;
	*) eval "${1}=\${CONFIG_${2}_${3}:-\${4}}" ;;
	esac
}

get_bool() {
	local _tmp="$1"
	case "$_tmp" in
	1|on|true|yes|enabled) _tmp=1 ;;
	0|off|false|no|disabled) _tmp=0 ;;
	*) _tmp="$2" ;;
	esac
	echo -n "$_tmp"
}

config_get_bool() {
	local _tmp
	config_get _tmp "$2" "$3" "$4"
	_tmp="$(get_bool "$_tmp" "$4")"
	eval "$1=\$_tmp"
}

config_foreach() {
	local ___function="$1"
	[ "$#" -ge 1 ] && shift
	local ___type="$1"
	[ "$#" -ge 1 ] && shift
	local section cfgtype
	[ -z "$CONFIG_SECTIONS" ] && return 0
	for section in ${CONFIG_SECTIONS}; do
		config_get cfgtype "$section" TYPE
		[ -n "$___type" ] && [ "x$cfgtype" != "x$___type" ] && continue
		eval "$___function \"\$section\" \"\$@\""
	done
}

config_list_foreach() {
	[ "$#" -ge 3 ] || return 0
	local section="$1"; shift
	local option="$1"; shift
	local function="$1"; shift
	local val len c=1
	config_get len "${section}" "${option}_LENGTH"
	[ -z "$len" ] && return 0
	while [ $c -le "$len" ]; do
		config_get val "${section}" "${option}_ITEM$c"
		eval "$function \"\$val\" \"\$@\""
		c="$((c + 1))"
	done
}
