#!/usr/bin/env bash
# Parse --name value / --name=value options into shell variables that the caller has already defined.
#
# Source it after setting the defaults (and, optionally, $help_message):
#     nj=4; use_gpu=false
#     . utils/parse_options.sh
# Then "$@" holds what is left: the positional arguments.
#
# Rules (what ESPnet and Kaldi users expect, and errors where they would be silently surprised):
#   - "--foo-bar x" and "--foo_bar=x" both set foo_bar; the variable must exist, else it is an error
#     naming the option (a typo never passes unnoticed).
#   - a variable whose default is true or false only accepts true or false.
#   - "--help" or "-h" prints $help_message (or "no help") and exits 0.
#   - "--" ends the options; the first argument that is not an option ends them too.
#   - "--config FILE", where the caller defines `config`, sources FILE (name=value lines) before the
#     options that follow, so that the command line wins.

__po_fail() { echo "$0: $*" >&2; exit 1; }

while [ $# -gt 0 ]; do
    case "$1" in
        --help|-h)
            printf '%s\n' "${help_message:-no help}"
            exit 0 ;;
        --) shift; break ;;
        --*=*) __po_name=${1%%=*}; __po_value=${1#*=}; shift ;;
        --*)
            [ $# -ge 2 ] || __po_fail "option $1 needs a value"
            __po_name=$1; __po_value=$2; shift 2 ;;
        *) break ;;
    esac
    __po_name=${__po_name#--}
    __po_name=${__po_name//-/_}
    [[ $__po_name =~ ^[A-Za-z_][A-Za-z0-9_]*$ ]] || __po_fail "invalid option name: --${__po_name}"
    [ -n "${!__po_name+x}" ] || __po_fail "unknown option --${__po_name} (run $0 --help for the list)"
    case "${!__po_name}" in
        true|false)
            case "$__po_value" in
                true|false) ;;
                *) __po_fail "option --${__po_name} takes true or false, got '${__po_value}'" ;;
            esac ;;
    esac
    if [ "$__po_name" = config ]; then
        [ -f "$__po_value" ] || __po_fail "--config: no such file: ${__po_value}"
        # shellcheck disable=SC1090
        . "$__po_value"
    fi
    printf -v "$__po_name" '%s' "$__po_value"
done
unset __po_name __po_value
true
