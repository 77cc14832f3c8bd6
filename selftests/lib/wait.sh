# kh_wait [-m MS] SECONDS COMMAND...: run COMMAND every MS milliseconds
# (200 unless given; 1-999) until it succeeds; status 1 if it has not
# within SECONDS. KH_WAITED: whole seconds waited. A short step is for a
# wait whose end is itself measured (selftests/prezero/stop.sh,
# bench/prezero.sh). The one polling helper: sourced by ktap.sh in the rig
# guest (busybox sh) and by tools/env.sh on the host (bash).
kh_wait() {
    _kh_ms=200
    if [ "$1" = -m ]; then _kh_ms=$2; shift 2; fi
    _kh_step=$(printf '0.%03d' "$_kh_ms")
    _kh_left=$(($1 * 1000 / _kh_ms)) _kh_t=0
    shift
    until "$@"; do
        if [ "$_kh_left" -le 0 ]; then KH_WAITED=$((_kh_t * _kh_ms / 1000)); return 1; fi
        _kh_left=$((_kh_left - 1)) _kh_t=$((_kh_t + 1))
        sleep "$_kh_step"
    done
    KH_WAITED=$((_kh_t * _kh_ms / 1000))
}
