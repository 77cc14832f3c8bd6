# kh_wait SECONDS COMMAND...: run COMMAND every 0.2 s until it succeeds;
# status 1 if it has not within SECONDS. KH_WAITED: whole seconds waited.
# The one polling helper: sourced by ktap.sh in the rig guest (busybox sh)
# and by tools/env.sh on the host (bash).
kh_wait() {
    _kh_left=$(($1 * 5)) _kh_t=0
    shift
    until "$@"; do
        if [ "$_kh_left" -le 0 ]; then KH_WAITED=$((_kh_t / 5)); return 1; fi
        _kh_left=$((_kh_left - 1)) _kh_t=$((_kh_t + 1))
        sleep 0.2
    done
    KH_WAITED=$((_kh_t / 5))
}
