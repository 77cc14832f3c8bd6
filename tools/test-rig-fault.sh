#!/bin/bash
# Host test of tools/rig-fault.py (what makes make check run a rig once
# more instead of failing it): synthetic consoles, each checked for the
# fault it must name, or for nothing named. Prints KTAP-style lines and
# "N passed, N failed".
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
d=$(mktemp -d); trap 'rm -rf "$d"' EXIT
p=0 f=0 k=0
# a System.map with __svm_vcpu_run at ...81f11980, its next symbol 0x230 on
printf '%s\n' 'ffffffff81000000 T _text' 'ffffffff81f11980 T __svm_vcpu_run' \
    'ffffffff81f11bb0 T __svm_sev_es_vcpu_run' 'ffffffff82000000 D _sdata' > "$d/System.map"
# run NAME EXPECT CONSOLE [RESET-LOG [RC]]: EXPECT is a substring of the
# line printed, or "" for nothing printed
run() {
    local name=$1 want=$2 out
    printf '%s\n' "$3" > "$d/console.log"
    printf '%s\n' "${4:-}" > "$d/reset.log"
    out=$(python3 "$here/rig-fault.py" "$d/console.log" "$d/reset.log" "${5:-0}" "${MAP:-$d/System.map}" 2>&1)
    k=$((k + 1))
    if { [ -z "$want" ] && [ -z "$out" ]; } || { [ -n "$want" ] && [[ "$out" == *"$want"* ]]; }; then
        p=$((p + 1)); echo "ok $k - $name"
    else
        f=$((f + 1)); echo "not ok $k - $name"; echo "#   wanted: ${want:-nothing}"; echo "#   got: ${out:-nothing}"
    fi
}
# a stalled domain's description (selftests/libvirt/upgrade.sh) with RIP
stall() { # RESULT RIP
    printf '%s\n' "[  187.000] KH-RESULT libvirt/upgrade: $1" \
        "[  188.438] # stalled lv1: 02:38:33 domstate: paused (unknown)" \
        "[  188.682] #   VM status: paused (internal-error)" \
        "[  188.991] #   CPU#0" \
        "[  188.991] #   RAX=000000011f929000 RBX=ffffccdbc0013c68 RCX=000000000000080b RDX=0000000000000000" \
        "[  188.995] #   RIP=$2 RFL=00010246 [---Z-P-] CPL=0 II=0 A20=1 SMM=0 HLT=0" \
        "[  188.995] #   CR0=80050033 CR2=$2 CR3=000000011f92c000 CR4=000006f0"
}
run "the instruction after VMRUN, at the System.map's base, is named" \
    "nested VM run on the rig kernel's own state (RIP ffffffff81f11a1c is __svm_vcpu_run+0x9c" \
    "$(stall 'not ok   lv1 running' ffffffff81f11a1c)"
run "the same at a KASLR base 0xd400000 on (after a kexec), with its CR3" \
    "__svm_vcpu_run+0x9c, the instruction after VMRUN, CR3 11f92c000)" \
    "$(stall 'not ok   lv1 running' ffffffff8f311a1c)"
run "the same printed by the failing check's own command, before its not ok" \
    "__svm_vcpu_run+0x9c" \
    "$(printf '%s\n' '[  186.000] KH-RESULT libvirt/upgrade: ok   x'; stall 'not ok   u1 running' ffffffff81f11a1c | sed -n '2,$p'; stall 'not ok   u1 running' 0 | head -n 1)"
run "(control: the same before an ok names nothing)" "" \
    "$(printf '%s\n' '[  186.000] KH-RESULT libvirt/upgrade: ok   x'; stall 'ok   u1 running' ffffffff81f11a1c | sed -n '2,$p'; stall 'ok   u1 running' 0 | head -n 1)"
run "(control: a guest RIP elsewhere names nothing)" "" \
    "$(stall 'not ok   lv1 running' ffffffff8f411a1c)"
run "(control: the base off the 2 MiB step names nothing)" "" \
    "$(stall 'not ok   lv1 running' ffffffff8f312a1c)"
run "(control: no failed check before it names nothing)" "" \
    "$(stall 'ok   lv1 running' ffffffff81f11a1c)"
run "(control: no internal error before it names nothing)" "" \
    "$(stall 'not ok   lv1 running' ffffffff81f11a1c | sed 's/(internal-error)/(user)/')"
run "(control: the rig's own vCPU in __svm_vcpu_run (a wedge dump) names nothing)" "" \
    "$(printf '%s\n' '[  1.000] KH-RESULT x: not ok y' 'rig: wedged: KVM internal error' 'rig: wedged: RIP=ffffffff81f11a1c RFL=00000046')"
int3() { # BYTE-BEFORE
    printf '%s\n' "[  9.000] KH-RESULT upgrade/upgrade: not ok x" "[ 10.000] [   9.1] Oops: int3: 0000 [#1] SMP" \
        "[ 10.001] [   9.1] RIP: 0010:sched_clock_tick+0x6/0x70" \
        "[ 10.002] [   9.1] Code: 90 90 90 $1 <cc> 48 89 e5"
}
run "a stale int3 is named" "stale int3 (the byte before the trap is 0f, not cc): 0010:sched_clock_tick+0x6/0x70" "$(int3 0f)"
run "(control: an int3 after an int3 byte names nothing)" "" "$(int3 cc)"
run "a triple fault with nothing on the console is named" "triple fault" "[  1.000] KH-TEST-START x" "Triple fault"
run "(control: a panic before the triple fault names nothing)" "" \
    "$(printf '%s\n' '[  1.000] KH-TEST-START x' '[  2.000] Kernel panic - not syncing: x')" "Triple fault"
# the rig kernel's trace of a timer interrupt taken at the first
# instruction of the page fault's handler (session 31, out/s31-a)
irq() { # INTERRUPTED-EFLAGS [LAST-LINE]
    printf '%s\n' "[ 41.674] KH-RESULT libvirt/upgrade: ok u1 boots" \
        "[ 43.658] [ 42.66] BUG: ENTRY_TRAMPOLINE stack guard page was hit at fffffe596e4e1ff8" \
        "[ 43.659] [ 42.67] Oops: stack guard page: 0000 [#1] SMP NOPTI" \
        "[ 43.690] [ 42.70] RIP: 0010:irqentry_enter+0x78/0xc0" \
        "[ 43.691] [ 42.70] RSP: 0000:fffffe596e4e2f08 EFLAGS: 00010046" \
        "[ 43.692] [ 42.70]  sysvec_apic_timer_interrupt+0xe/0x80" \
        "[ 43.692] [ 42.70]  asm_sysvec_apic_timer_interrupt+0x1a/0x20" \
        "[ 43.692] [ 42.70] RIP: 0010:asm_exc_page_fault+0x0/0x30" \
        "[ 43.692] [ 42.70] Code: 74 24 28 66 90 <f3> 0f 1e fa" \
        "[ 43.693] [ 42.70] RSP: 0000:fffffe596e4e2fd0 EFLAGS: $1" \
        "[ 43.700] [ 42.71] Kernel panic - not syncing: Fatal exception in interrupt" ${2:+"$2"}
}
run "a maskable interrupt taken with IF clear is named" \
    "a maskable interrupt taken with IF clear (asm_sysvec_apic_timer_interrupt at 0010:asm_exc_page_fault+0x0/0x30, EFLAGS 00010006)" \
    "$(irq 00010006)"
run "(control: the same trace with IF set names nothing)" "" "$(irq 00010206)"
run "(control: a run that finished names nothing)" "" "$(irq 00010006 '[ 50.000] KH-ALL-DONE')"
run "(control: the trace without a panic or oops names nothing)" "" "$(irq 00010006 | grep -v -e Oops -e 'Kernel panic')"
run "(control: that trace before another oops the kernel died of names nothing)" "" \
    "$(irq 00010006 | grep -v 'Kernel panic'; printf '%s\n' '[ 60.000] [ 59.90] BUG: kernel NULL pointer dereference, address: 0000000000000008' \
        '[ 60.001] [ 59.90] Oops: Oops: 0000 [#2] SMP NOPTI' '[ 60.002] [ 59.90] RIP: 0010:kram_adopt+0x40/0x200 [kram]' \
        '[ 60.010] [ 59.91] Kernel panic - not syncing: Fatal exception')"
MAP=/nonexistent run "(control: a missing System.map names nothing, and no error)" "" "$(stall 'not ok   lv1 running' ffffffff81f11a1c)" "" 0
echo "$p passed, $f failed"
[ "$f" = 0 ]
