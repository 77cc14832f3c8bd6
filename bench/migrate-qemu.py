#!/usr/bin/python3
"""Baseline migrations driven straight through QMP, no liveup: plain QEMU
(one TCP stream, no multifd, no compression) or QEMU multifd with zstd.

    migrate-qemu.py SRC.qmp DST.qmp DEST-IP PORT plain|zstd CHANNELS DOWNTIME-MS

Sets both QEMUs up like `liveup migrate` would for its native mode (same
downtime limit, bandwidth cap out of the way), migrates, waits for the
destination to have loaded everything, resumes it, and prints one JSON
object with liveup's report fields: total_secs (migrate command to the
destination resumed), qemu_downtime_ms (QEMU's own figure), downtime_ms
(source stopped, by QEMU's clock, to the destination resumed), wire_bytes
(ram.transferred), stream_bytes and ratio (computed as liveup does for its
native mode). Exits 1 when the migration fails.
"""
import json
import socket
import sys
import time


class Qmp:
    def __init__(self, path):
        self.s = socket.socket(socket.AF_UNIX)
        self.s.settimeout(30)
        self.s.connect(path)
        self.f = self.s.makefile("rw")
        self.f.readline()
        self.cmd("qmp_capabilities")

    def cmd(self, c, **a):
        self.f.write(json.dumps({"execute": c, "arguments": a}) + "\n")
        self.f.flush()
        while True:
            r = json.loads(self.f.readline())
            if "return" in r:
                return r["return"]
            if "error" in r:
                sys.exit("QMP %s: %s" % (c, r["error"]["desc"]))


def main():
    src_path, dst_path, ip, port, kind, channels, downtime = sys.argv[1:8]
    src, dst = Qmp(src_path), Qmp(dst_path)
    multifd = kind == "zstd"
    caps = [{"capability": "multifd", "state": multifd}]
    for q in (src, dst):
        q.cmd("migrate-set-capabilities", capabilities=caps)
        if multifd:
            q.cmd("migrate-set-parameters", **{"multifd-channels": int(channels),
                                                "multifd-compression": "zstd"})
    src.cmd("migrate-set-parameters", **{"downtime-limit": int(downtime),
                                          "max-bandwidth": 10 << 30})
    uri = "tcp:%s:%s" % (ip, port)
    dst.cmd("migrate-incoming", uri=uri)
    t0 = time.monotonic()
    src.cmd("migrate", uri=uri)
    while True:
        m = src.cmd("query-migrate")
        if m.get("status") in ("completed", "failed", "cancelled"):
            break
        time.sleep(0.05)
    if m["status"] != "completed":
        sys.exit("migration %s: %s" % (m["status"], m.get("error-desc", "")))
    deadline = time.monotonic() + 120
    while dst.cmd("query-status").get("status") == "inmigrate":
        if time.monotonic() > deadline:
            sys.exit("destination never completed its incoming migration")
        time.sleep(0.02)
    dst.cmd("cont")
    resumed = time.monotonic() - t0
    ram = m["ram"]
    transferred = ram.get("transferred", 0)
    stream = ram.get("normal-bytes", 0) + transferred - ram.get("multifd-bytes", 0) \
        if multifd else transferred
    qdown = m.get("downtime", 0)
    stopped = (m.get("total-time", 0) - qdown) / 1000.0
    # the result event of `liveup migrate send --json`'s stream
    print(json.dumps({
        "event": "result",
        "total_secs": resumed,
        "qemu_downtime_ms": qdown,
        "downtime_ms": int(max(resumed - stopped, 0) * 1000),
        "wire_bytes": transferred,
        "stream_bytes": stream,
        "ratio": stream / transferred if transferred else 1.0,
        "src_liveup_cpu_secs": 0.0,
        "dst_liveup_cpu_secs": 0.0,
        "dirty_bps": 0,
        "plan": {"level": 1 if multifd else 0, "chunk_size": 0},
    }))


main()
