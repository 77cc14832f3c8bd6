#!/usr/bin/python3
"""Name a fault of the rig itself, not of the code under test, in a finished
rig run; print one line naming it, or nothing.

Usage: tools/rig-fault.py CONSOLE-LOG RESET-LOG QEMU-RC SYSTEM-MAP

tools/vm-run.sh marks a run so named like a wedge, and kh_rig_once_more
(tools/env.sh) runs that rig again (up to KH_RIG_RUNS runs), each faulted run kept and named in
the report. Each kind was seen in rigs of two vCPUs on two TCG threads of
QEMU 11.1 (Documentation/upgrade.rst, Known problems):

- a stale int3: the kernel died with "Oops: int3" although the byte before
  the trapping address is no longer 0xcc in its own Code: dump
  (text_poke_bp had finished; the vCPU ran a translation made before),
  e.g. at sched_clock_tick+0x6 early after a kexec (stop 33's CI);
- a nested VM reset under its guest: "KVM internal error" (emulation
  failure) with the vCPU in reset state (CR0=0x10, real mode at CS=f000,
  IDT limit 0x3ff) yet the guest's own general registers, after every
  memory check of that VM passed and with no fault or BAD line of its own
  (sessions 22-24, tinyvm). Lost guest memory shows as BAD first and is
  never this;
- a nested VM run on the rig kernel's own state: a nested VM stopped on a
  KVM internal error whose RIP is the instruction after VMRUN in the rig
  kernel's __svm_vcpu_run (SYSTEM-MAP; the same image at another 2 MiB
  aligned KASLR base, as after a kexec into it). KVM never writes its own
  RIP, CR3 or VMCB address into a guest's state; only the CPU's VMRUN and
  #VMEXIT do (the host save area), here the outer QEMU's TCG emulation of
  SVM. selftests/diag/svm_state.sh catches it with no libvirt or liveup
  involved: a kvm_exit trace shows the entry (an interrupt injected,
  during a migration) after which the exit reports RIP, RAX and CR3 of
  the rig kernel (session 30). The guest's state is lost there, before
  any save; the VM stops at its next exit;
- a maskable interrupt taken with IF clear: the rig kernel died, and its
  trace shows a hardware interrupt's entry (asm_sysvec_* or
  asm_common_interrupt) whose interrupted frame has EFLAGS.IF = 0, e.g.
  the APIC timer at asm_exc_page_fault+0x0 with EFLAGS 00010006 (the
  page fault's interrupt gate had just cleared IF), after which the
  handler ran on the user's GS and the kernel died on the stack guard
  page (session 31, before any upgrade). No CPU delivers a maskable
  interrupt with IF clear, and no code of the kernel's can make one do
  so;
- a triple fault: QEMU reset the machine ("Triple fault" in the reset log
  of -d cpu_reset) and, under -no-reboot, exited; the kernel printed no
  panic, oops or BUG before it (sessions 21 and 23: the L1 reset after the
  4-VM restore).

Each counts only where it made a check fail (the diagnosis after a
"not ok") or ended the run early. A kernel that asks for a reboot, or
panics, is not a rig fault unless its trace shows the CPU's own fault.
"""
import re
import sys

KASLR_ALIGN = 0x200000  # CONFIG_PHYSICAL_ALIGN: the KASLR base's step
KERNEL_TEXT = 0xffffffff80000000


def read_lines(path):
    try:
        return open(path, errors="replace").read().split("\n")
    except OSError:
        return []


def after_failure(con, i):
    """Line i belongs to a failed check: the last check before it failed
    (what a test prints after a "not ok"), or the next one after it does
    (what a check's own command printed before failing)."""
    last = next((l for l in reversed(con[:i]) if "KH-RESULT" in l), "")
    following = next((l for l in con[i + 1:] if "KH-RESULT" in l), "")
    return ": not ok " in last or ": not ok " in following


def svm_run_range(system_map):
    """(start, end) of __svm_vcpu_run in the rig kernel, or None."""
    syms = []
    for line in read_lines(system_map):
        f = line.split()
        if len(f) >= 3 and f[1] in "tTwW":
            try:
                syms.append((int(f[0], 16), f[2]))
            except ValueError:
                continue
    syms.sort()
    for k, (addr, name) in enumerate(syms):
        if name == "__svm_vcpu_run":
            end = next((a for a, _ in syms[k + 1:] if a > addr), addr + 0x1000)
            return addr, end
    return None


def stale_int3(con):
    for i, line in enumerate(con):
        if "Oops: int3" not in line:
            continue
        rip = next((l for l in con[i:i + 80] if "RIP: 0010:" in l), "")
        code = next((l for l in con[i:i + 80] if " Code: " in l), "")
        m = re.search(r"([0-9a-f]{2}) <([0-9a-f]{2})>", code)
        if m and m.group(1) != "cc":
            return "stale int3 (the byte before the trap is %s, not cc): %s" % (
                m.group(1), rip.split("RIP: ")[-1].strip())
    return None


def reset_under_guest(con, run):
    for i, line in enumerate(con):
        m = re.search(r"KH-LOG (\S+) qemu: KVM internal error", line)
        if not m or not after_failure(con, i):
            continue
        vm = m.group(1)
        dump = "\n".join(con[i:i + 40])
        mine = read_lines("%s/%s.console" % (run, vm))
        if not mine:
            mine = [l for l in con if ("KH-LOG %s console:" % vm) in l]
        checks = [l for l in mine if "VM-MEMCHECK" in l]
        if ("CR0=00000010" in dump and "IDT=     00000000 000003ff" in dump and "CS =f000" in dump
                and checks and all(l.rstrip().endswith(" ok") for l in checks)
                and not any("VM-FAULT" in l or "BAD" in l for l in mine)):
            return "nested VM %s reset under it (KVM internal error in reset state after %d memory checks, all ok)" % (
                vm, len(checks))
    return None


def host_state_in_guest(con, system_map):
    rng = None  # System.map is read only once a candidate is found
    for i, line in enumerate(con):
        # a nested VM's registers (QEMU's), never the rig's own (rig: ...)
        if line.startswith("rig:"):
            continue
        m = re.search(r"\bRIP=([0-9a-f]{16})\b", line)
        if not m:
            continue
        ctx = "\n".join(con[max(0, i - 20):i])
        if not re.search(r"internal.error", ctx, re.IGNORECASE) or not after_failure(con, i):
            continue
        rip = int(m.group(1), 16)
        if rip < KERNEL_TEXT:
            continue
        rng = rng or svm_run_range(system_map)
        if not rng:
            return None
        start, end = rng
        off = (rip - start) % KASLR_ALIGN
        if off < end - start:
            cr3 = re.search(r"\bCR3=([0-9a-f]+)", "\n".join(con[i:i + 16]))
            return ("nested VM run on the rig kernel's own state (RIP %x is __svm_vcpu_run+0x%x, "
                    "the instruction after VMRUN%s): TCG's SVM emulation" % (
                        rip, off, ", CR3 %x" % int(cr3.group(1), 16) if cr3 else ""))
    return None


def interrupt_with_if_clear(con):
    if any("KH-ALL-DONE" in l for l in con):
        return None
    # only in the trace of the oops the kernel died of: from its last
    # "Oops: " or "BUG: " line before the panic to the panic
    end = next((i for i in range(len(con) - 1, -1, -1) if "Kernel panic - not syncing" in con[i]), None)
    if end is None:
        return None
    start = next((i for i in range(end, -1, -1) if re.search(r"\] (Oops|BUG): ", con[i])), None)
    if start is None:
        return None
    for i in range(start, end):
        line = con[i]
        entry = re.search(r"\s(asm_sysvec_\w+|asm_common_interrupt)\+", line)
        if not entry:
            continue
        # the interrupted frame: its RIP line next, its EFLAGS two lines on
        rip = con[i + 1] if i + 1 < len(con) else ""
        if "RIP: " not in rip:
            continue
        fl = next((re.search(r"EFLAGS: ([0-9a-f]{8})", l) for l in con[i + 2:i + 5] if "EFLAGS: " in l), None)
        if fl and not int(fl.group(1), 16) & 0x200:
            return ("a maskable interrupt taken with IF clear (%s at %s, EFLAGS %s): "
                    "the emulated CPU" % (entry.group(1), rip.split("RIP: ")[-1].strip(), fl.group(1)))
    return None


def triple_fault(con, reset, rc):
    done = any("KH-ALL-DONE" in l for l in con)
    died = any(re.search(r"Kernel panic|Oops|BUG:|\] (general protection|double fault)", l) for l in con)
    if rc == "0" and not done and not died and "Triple fault" in reset:
        return "triple fault, QEMU reset the machine with nothing on the console"
    return None


def main(argv):
    if len(argv) != 5:
        print(__doc__.splitlines()[2], file=sys.stderr)
        return 2
    console, reset_log, rc, system_map = argv[1:]
    con = read_lines(console)
    reset = "\n".join(read_lines(reset_log))
    run = console.rsplit("/", 1)[0]
    fault = (stale_int3(con) or reset_under_guest(con, run)
             or host_state_in_guest(con, system_map) or interrupt_with_if_clear(con)
             or triple_fault(con, reset, rc))
    if fault:
        print(fault)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
