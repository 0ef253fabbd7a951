#!/usr/bin/env bash
# Fake sudo: logs {tool:"sudo", argv, cwd} to $FAKE_LOG, then execs the rest of its argv (as the
# same user, environment kept). With FAKE_SUDO_PASSWORD=1 it behaves like a sudo without cached
# credentials: -n fails with "sudo: a password is required", otherwise it asks on the terminal.
json_str() {
  local s=$1
  s=${s//\\/\\\\}; s=${s//\"/\\\"}; s=${s//$'\n'/\\n}; s=${s//$'\r'/\\r}; s=${s//$'\t'/\\t}
  printf '"%s"' "$s"
}
if [ -n "$FAKE_LOG" ]; then
  line='{"tool":"sudo","argv":['
  sep=''
  for a in "$@"; do line+="$sep$(json_str "$a")"; sep=','; done
  line+='],"cwd":'"$(json_str "$PWD")"'}'
  printf '%s\n' "$line" >> "$FAKE_LOG"
fi
nonint=''
while [ $# -gt 0 ]; do
  case "$1" in
    -n|--non-interactive) nonint=1; shift ;;
    -E|-H|-S|-b|-P|--preserve-env|--preserve-env=*|--login|-i|-s) shift ;;
    -u|-g|-C|-D|-h|-p|-r|-t|-T|-U) shift 2 ;;
    -k|--reset-timestamp) shift; [ $# -eq 0 ] && exit 0 ;;
    -K|--remove-timestamp) exit 0 ;;
    -v|--validate)
      if [ -n "$FAKE_SUDO_PASSWORD" ] && [ -n "$nonint" ]; then echo "sudo: a password is required" >&2; exit 1; fi
      exit 0 ;;
    -V|--version) echo "Sudo version 1.9.15p5"; exit 0 ;;
    --) shift; break ;;
    -*) echo "sudo: invalid option -- '${1#-}'" >&2; echo "usage: sudo -h | -K | -k | -V" >&2; exit 1 ;;
    *) break ;;
  esac
done
if [ $# -eq 0 ]; then
  echo "usage: sudo -h | -K | -k | -V" >&2
  exit 1
fi
if [ -n "$FAKE_SUDO_PASSWORD" ]; then
  if [ -n "$nonint" ]; then echo "sudo: a password is required" >&2; exit 1; fi
  printf '[sudo] password for %s: ' "${USER:-root}" >&2
  IFS= read -r -s _pw || { echo >&2; echo "sudo: no password was provided" >&2; exit 1; }
  echo >&2
fi
if ! command -v -- "$1" >/dev/null 2>&1; then
  echo "sudo: $1: command not found" >&2
  exit 1
fi
export FAKE_EXEC_ARG0="$1"
export SUDO_USER="${USER:-root}" SUDO_UID="$(id -u)" SUDO_GID="$(id -g)" SUDO_COMMAND="$*"
exec "$@"
