#!/bin/sh
# kram loads on the reserved region and unloads with no warning (refusals of
# bad regions: kram/region).
. /host/lib/ktap.sh
kh_module_load_unload kram "$KRAM_PARAMS" /dev/kram
