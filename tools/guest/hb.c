// SPDX-License-Identifier: GPL-2.0
/*
 * kh-hb: the workload of the Linux test VM (tools/guest/vm-init runs it as
 * its last step). C like tools/guest/tinyvm.c: the VM's initramfs is busybox
 * without a libc, and one `gcc -static` line in tools/mkinitramfs.sh builds
 * it; a Rust binary would need a second, static (crt-static) build of the
 * workspace just for this loop.
 *
 *   kh-hb NAME HB_TTY CON_TTY MEM_MIB [disk=DEV] [net=IFACE] [rx=IFACE]
 *
 * Fills MEM_MIB of anonymous memory with self-verifying 4 KiB pages (each
 * page: its index, a generation and a pseudo-random body derived from
 * both), then every 20 ms (CLOCK_MONOTONIC absolute sleeps) prints on
 * HB_TTY
 *     HB NAME SEQ MONO_MS REAL_MS
 * with the guest's own monotonic and wall clock, so the outer host can put
 * the guest's view of a pause next to its own. Every beat it also rewrites
 * a few pages with the next generation; every 100 beats it verifies every
 * page and prints on CON_TTY
 *     VM-MEMCHECK NAME SEQ ok|BAD [page P]
 * A pause the guest noticed (its monotonic clock advanced over 1 s between
 * two beats) is printed on CON_TTY as
 *     VM-GAP NAME SEQ MONO_GAP_MS REAL_GAP_MS
 * and a monotonic clock that went backwards as VM-CLOCK-BACK.
 *
 * disk=DEV (a virtio-blk disk): a second process writes 4 KiB records in a
 * ring over the first 4 MiB of DEV with O_DIRECT, each followed by
 * fdatasync (a flush the host must honour before the write counts), one
 * every 20 ms; every 50 records it reads every record written so far back
 * from the disk (O_DIRECT: from the device, not the guest's cache) and
 * prints on CON_TTY
 *     VM-DISKCHECK NAME WRITTEN ok|BAD record R
 * A record that was flushed before a host upgrade and is missing or stale
 * after it shows as BAD. An I/O error prints VM-DISKERR.
 *
 * net=IFACE (a virtio-net NIC whose other end reflects frames: the rig's
 * kh-netpeer): a third process sends numbered raw Ethernet frames
 * (EtherType 0x88b5, local experimental) one at a time and waits up to
 * 250 ms for each to come back; every 100 frames it prints on CON_TTY
 *     VM-NET NAME sent S echoed E lost L late T
 * where an echo that came back after its 250 ms (the guest stalled, its
 * clock running) counts as echoed and late, not lost. A frame in flight
 * when the host stops the VM can be lost; anything more is the upgrade's
 * fault.
 *
 * rx=IFACE (a NIC fed numbered frames by the rig's tools/nic-sender.pl,
 * such as a passed-through e1000e): a process counts them and prints
 * VM-RX lines once a second (see rx_worker).
 *
 * agent (a virtio-serial port named org.qemu.guest_agent.0): a fourth
 * process answers the few guest-agent commands liveup sends after a
 * restore, as QEMU's agent does: guest-sync, guest-ping, guest-get-time
 * and guest-set-time (one JSON object a line). A clock set prints
 *     VM-CLOCK-SET NAME DELTA_MS
 * on CON_TTY. guest-shutdown (mode powerdown, libvirt's `virsh shutdown
 * --mode agent`) prints VM-SHUTDOWN NAME, syncs and powers the VM off. The
 * VM's own init does not run QEMU's agent (it would need glib in an
 * initramfs that has no libc).
 */
#define _GNU_SOURCE /* O_DIRECT */
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <linux/ethtool.h>
#include <linux/sockios.h>
#include <net/if.h>
#include <netpacket/packet.h>
#include <poll.h>
#include <stdarg.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/reboot.h>
#include <time.h>
#include <unistd.h>

#define PAGE 4096u
#define WORDS (PAGE / 8)

static uint64_t mix(uint64_t x)
{
	x ^= x >> 33;
	x *= 0xff51afd7ed558ccdull;
	x ^= x >> 33;
	x *= 0xc4ceb9fe1a85ec53ull;
	return x ^ (x >> 33);
}

/* page layout: word 0 index, word 1 generation, words 2.. body */
static void fill(uint64_t *p, uint64_t idx, uint64_t gen)
{
	uint64_t s = mix(idx * 0x9e3779b97f4a7c15ull ^ gen);

	p[0] = idx;
	p[1] = gen;
	for (unsigned int i = 2; i < WORDS; i++) {
		s = mix(s + i);
		p[i] = s;
	}
}

static int check(const uint64_t *p, uint64_t idx)
{
	uint64_t s = mix(idx * 0x9e3779b97f4a7c15ull ^ p[1]);

	if (p[0] != idx)
		return 0;
	for (unsigned int i = 2; i < WORDS; i++) {
		s = mix(s + i);
		if (p[i] != s)
			return 0;
	}
	return 1;
}

static double ms(clockid_t c)
{
	struct timespec t;

	clock_gettime(c, &t);
	return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}

/* one line on a tty in one write(2), so the workers' lines do not mix */
static void say(int fd, const char *fmt, ...)
{
	char line[200];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	if (n > 0)
		write(fd, line, n < (int)sizeof(line) ? n : (int)sizeof(line) - 1);
}

static void sleep_ms(long ms)
{
	struct timespec t = { ms / 1000, (ms % 1000) * 1000000 };

	nanosleep(&t, NULL);
}

#define DISK_RECORDS 1024u

/* the disk worker (disk=DEV): never returns */
static void disk_worker(const char *name, const char *dev, int con)
{
	int fd = open(dev, O_RDWR | O_DIRECT);
	uint64_t *buf = NULL, *rd = NULL, records, written = 0;
	off_t size;

	if (fd < 0 || (size = lseek(fd, 0, SEEK_END)) < (off_t)PAGE) {
		say(con, "VM-DISKERR %s open %s: %s\n", name, dev, strerror(errno));
		_exit(1);
	}
	records = (uint64_t)size / PAGE < DISK_RECORDS ? (uint64_t)size / PAGE : DISK_RECORDS;
	if (posix_memalign((void **)&buf, PAGE, PAGE) || posix_memalign((void **)&rd, PAGE, PAGE))
		_exit(1);
	say(con, "VM-DISK %s %s %llu records\n", name, dev, (unsigned long long)records);
	for (;;) {
		uint64_t i = written % records, lap = written / records;

		/* generation lap + 1: a never-written (zero) record is never valid */
		fill(buf, i, lap + 1);
		if (pwrite(fd, buf, PAGE, (off_t)(i * PAGE)) != (ssize_t)PAGE || fdatasync(fd)) {
			say(con, "VM-DISKERR %s write record %llu: %s\n", name,
			    (unsigned long long)i, strerror(errno));
			sleep_ms(1000);
			continue;
		}
		written++;
		if (written % 50 == 0) {
			uint64_t cur = written % records, full = written / records, bad = records;
			uint64_t upto = full ? records : cur;

			for (uint64_t j = 0; j < upto && bad == records; j++) {
				uint64_t gen = j < cur ? full + 1 : full;

				if (pread(fd, rd, PAGE, (off_t)(j * PAGE)) != (ssize_t)PAGE ||
				    rd[1] != gen || !check(rd, j))
					bad = j;
			}
			if (bad == records)
				say(con, "VM-DISKCHECK %s %llu ok\n", name, (unsigned long long)written);
			else
				say(con, "VM-DISKCHECK %s %llu BAD record %llu\n", name,
				    (unsigned long long)written, (unsigned long long)bad);
		}
		sleep_ms(20);
	}
}

#define ETH_P_KH 0x88b5
#define NET_MAGIC 0x4b482d4e45542d31ull /* "KH-NET-1" */

struct kh_frame {
	uint8_t dst[6], src[6];
	uint16_t type;
	uint64_t magic, seq;
	char name[16];
} __attribute__((packed));

/* the network worker (net=IFACE): never returns */
static void net_worker(const char *name, const char *iface, int con)
{
	int s = socket(AF_PACKET, SOCK_RAW, htons(ETH_P_KH));
	struct sockaddr_ll a = { .sll_family = AF_PACKET, .sll_protocol = htons(ETH_P_KH) };
	struct ifreq ifr = { 0 };
	struct kh_frame f = { .type = htons(ETH_P_KH), .magic = NET_MAGIC };
	uint64_t sent = 0, echoed = 0, lost = 0, late = 0;

	a.sll_ifindex = (int)if_nametoindex(iface);
	snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "%s", iface);
	if (s < 0 || a.sll_ifindex == 0 || bind(s, (struct sockaddr *)&a, sizeof(a)) ||
	    ioctl(s, SIOCGIFHWADDR, &ifr)) {
		say(con, "VM-NETERR %s %s: %s\n", name, iface, strerror(errno));
		_exit(1);
	}
	memset(f.dst, 0xff, 6);
	memcpy(f.src, ifr.ifr_hwaddr.sa_data, 6);
	snprintf(f.name, sizeof(f.name), "%s", name);
	say(con, "VM-NET %s %s up\n", name, iface);
	for (;;) {
		f.seq = ++sent;
		if (send(s, &f, sizeof(f), 0) != (ssize_t)sizeof(f)) {
			say(con, "VM-NETERR %s send: %s\n", name, strerror(errno));
			sleep_ms(1000);
		}
		/* wait for this frame's echo; older echoes (late ones) are skipped */
		double deadline = ms(CLOCK_MONOTONIC) + 250;
		int got = 0;

		while (!got) {
			double left = deadline - ms(CLOCK_MONOTONIC);
			struct pollfd p = { .fd = s, .events = POLLIN };
			struct kh_frame r;

			if (left <= 0 || poll(&p, 1, (int)left + 1) <= 0)
				break;
			if (recv(s, &r, sizeof(r), 0) != (ssize_t)sizeof(r) ||
			    r.magic != NET_MAGIC || memcmp(r.dst, f.src, 6))
				continue;
			if (r.seq == f.seq)
				got = 1;
			else if (r.seq < f.seq && lost > late)
				late++; /* an echo that came after its 250 ms: not lost */
		}
		if (got)
			echoed++;
		else
			lost++;
		if (sent % 100 == 0)
			say(con, "VM-NET %s sent %llu echoed %llu lost %llu late %llu\n", name,
			    (unsigned long long)sent, (unsigned long long)(echoed + late),
			    (unsigned long long)(lost - late), (unsigned long long)late);
		sleep_ms(10);
	}
}

/*
 * the receive worker (rx=IFACE, a NIC the rig's tools/nic-sender.pl feeds,
 * e.g. a passed-through e1000e): counts the numbered frames it receives
 * (EtherType 0x88b5, "KHSQ" at byte 14, a big-endian sequence number at
 * byte 18) and once a second prints on CON_TTY
 *     VM-RX NAME got N first F last L missing M gaps G
 * where missing counts the numbers skipped between F and L (G runs of
 * them) and a number at or below the last one is counted as old, not as
 * missing; never returns
 */
static void rx_worker(const char *name, const char *iface, int con)
{
	int s = socket(AF_PACKET, SOCK_RAW, htons(ETH_P_KH));
	struct sockaddr_ll a = { .sll_family = AF_PACKET, .sll_protocol = htons(ETH_P_KH) };
	uint64_t got = 0, first = 0, last = 0, missing = 0, gaps = 0, old = 0;
	double next = ms(CLOCK_MONOTONIC) + 1000;

	a.sll_ifindex = (int)if_nametoindex(iface);
	if (s < 0 || a.sll_ifindex == 0 || bind(s, (struct sockaddr *)&a, sizeof(a))) {
		say(con, "VM-RXERR %s %s: %s\n", name, iface, strerror(errno));
		_exit(1);
	}
	/*
	 * the largest receive ring the driver offers (e1000e: 4096, from 256):
	 * a nested guest that stands still for seconds must not overflow it
	 * (busybox has no ethtool)
	 */
	struct ethtool_ringparam ring = { .cmd = ETHTOOL_GRINGPARAM };
	struct ifreq ifr = { .ifr_data = (void *)&ring };

	snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "%s", iface);
	if (!ioctl(s, SIOCETHTOOL, &ifr) && ring.rx_pending < ring.rx_max_pending) {
		ring.cmd = ETHTOOL_SRINGPARAM;
		ring.rx_pending = ring.rx_max_pending;
		if (ioctl(s, SIOCETHTOOL, &ifr))
			say(con, "VM-RXERR %s %s: ring of %u: %s\n", name, iface,
			    ring.rx_pending, strerror(errno));
	}
	say(con, "VM-RX %s %s up, ring %u\n", name, iface, ring.rx_pending);
	for (;;) {
		struct pollfd p = { .fd = s, .events = POLLIN };
		double left = next - ms(CLOCK_MONOTONIC);
		uint8_t f[128];

		if (left > 0 && poll(&p, 1, (int)left + 1) > 0 &&
		    recv(s, f, sizeof(f), 0) >= 26 && !memcmp(f + 14, "KHSQ", 4)) {
			uint64_t seq = 0;

			for (int i = 0; i < 8; i++)
				seq = seq << 8 | f[18 + i];
			if (got++ == 0)
				first = last = seq;
			else if (seq > last) {
				if (seq > last + 1) {
					gaps++;
					missing += seq - last - 1;
				}
				last = seq;
			} else
				old++;
		}
		if (ms(CLOCK_MONOTONIC) >= next) {
			say(con, "VM-RX %s got %llu first %llu last %llu missing %llu gaps %llu old %llu\n",
			    name, (unsigned long long)got, (unsigned long long)first,
			    (unsigned long long)last, (unsigned long long)missing,
			    (unsigned long long)gaps, (unsigned long long)old);
			next += 1000;
			if (next < ms(CLOCK_MONOTONIC))
				next = ms(CLOCK_MONOTONIC) + 1000;
		}
	}
}

#define AGENT_PORT "org.qemu.guest_agent.0"

/* the /dev node of the virtio-serial port named AGENT_PORT, or NULL (its
 * vportNpM number depends on the VM's other virtio devices) */
static const char *agent_dev(void)
{
	static char dev[300];
	char path[300], name[64];
	DIR *d;
	struct dirent *e;

	if (getenv("KH_AGENT_DEV")) /* a test on the build host: a pty */
		return getenv("KH_AGENT_DEV");
	d = opendir("/sys/class/virtio-ports");
	if (!d)
		return NULL;
	while ((e = readdir(d))) {
		FILE *f;
		int found;

		if (e->d_name[0] == '.')
			continue;
		snprintf(path, sizeof(path), "/sys/class/virtio-ports/%s/name", e->d_name);
		f = fopen(path, "r");
		if (!f)
			continue;
		found = fgets(name, sizeof(name), f) && !strncmp(name, AGENT_PORT, strlen(AGENT_PORT));
		fclose(f);
		if (found) {
			snprintf(dev, sizeof(dev), "/dev/%s", e->d_name);
			closedir(d);
			return dev;
		}
	}
	closedir(d);
	return NULL;
}

/* the number after "KEY": in a request line (0 when missing) */
static long long field(const char *req, const char *key)
{
	const char *p = strstr(req, key);

	if (!p)
		return 0;
	p += strlen(key);
	while (*p == '"' || *p == ':' || *p == ' ')
		p++;
	return strtoll(p, NULL, 10);
}

/* the guest-agent worker: never returns */
static void agent_worker(const char *name, const char *dev, int con)
{
	int fd = open(dev, O_RDWR | O_NOCTTY);
	char req[4096];
	size_t len = 0;

	if (fd < 0) {
		say(con, "VM-AGENTERR %s %s: %s\n", name, dev, strerror(errno));
		_exit(1);
	}
	say(con, "VM-AGENT %s %s\n", name, dev);
	for (;;) {
		struct pollfd p = { .fd = fd, .events = POLLIN };
		ssize_t n;
		char *nl;

		/* no host connected: poll says POLLHUP and read gives 0 */
		if (poll(&p, 1, 1000) <= 0 || !(p.revents & POLLIN)) {
			sleep_ms(100);
			continue;
		}
		n = read(fd, req + len, sizeof(req) - 1 - len);
		if (n <= 0) {
			sleep_ms(100);
			continue;
		}
		len += (size_t)n;
		req[len] = 0;
		while ((nl = strchr(req, '\n'))) {
			char out[128];
			int m;

			*nl = 0;
			if (strstr(req, "\"guest-sync\"")) {
				m = snprintf(out, sizeof(out), "{\"return\": %lld}\n", field(req, "\"id\""));
			} else if (strstr(req, "\"guest-get-time\"")) {
				struct timespec t;

				clock_gettime(CLOCK_REALTIME, &t);
				m = snprintf(out, sizeof(out), "{\"return\": %lld}\n",
					     (long long)t.tv_sec * 1000000000ll + t.tv_nsec);
			} else if (strstr(req, "\"guest-set-time\"") && strstr(req, "\"time\"")) {
				long long ns = field(req, "\"time\"");
				struct timespec t = { ns / 1000000000ll, ns % 1000000000ll };
				double before = ms(CLOCK_REALTIME);

				if (ns > 0 && !clock_settime(CLOCK_REALTIME, &t)) {
					say(con, "VM-CLOCK-SET %s %.1f\n", name, ns / 1e6 - before);
					m = snprintf(out, sizeof(out), "{\"return\": {}}\n");
				} else {
					m = snprintf(out, sizeof(out),
						     "{\"error\": {\"class\": \"GenericError\", \"desc\": \"%s\"}}\n",
						     ns > 0 ? strerror(errno) : "bad time");
				}
			} else if (strstr(req, "\"guest-shutdown\"") &&
				   (!strstr(req, "\"mode\"") || strstr(req, "\"powerdown\""))) {
				/* no answer: the agent's caller waits for the VM to stop */
				say(con, "VM-SHUTDOWN %s\n", name);
				sync();
				reboot(RB_POWER_OFF);
				m = snprintf(out, sizeof(out),
					     "{\"error\": {\"class\": \"GenericError\", \"desc\": \"%s\"}}\n",
					     strerror(errno));
			} else if (strstr(req, "\"guest-ping\"")) {
				m = snprintf(out, sizeof(out), "{\"return\": {}}\n");
			} else {
				m = snprintf(out, sizeof(out),
					     "{\"error\": {\"class\": \"CommandNotFound\", \"desc\": \"not in kh-hb\"}}\n");
			}
			write(fd, out, m);
			len -= (size_t)(nl + 1 - req);
			memmove(req, nl + 1, len + 1);
		}
		if (len == sizeof(req) - 1)
			len = 0; /* a line too long: dropped */
	}
}

static int open_tty(const char *path)
{
	int fd = open(path, O_WRONLY | O_NOCTTY);

	if (fd < 0) {
		perror(path);
		exit(1);
	}
	return fd;
}

int main(int argc, char **argv)
{
	if (argc < 5) {
		fprintf(stderr, "usage: kh-hb NAME HB_TTY CON_TTY MEM_MIB [disk=DEV] [net=IFACE] [rx=IFACE]\n");
		return 2;
	}
	const char *name = argv[1];
	int hb = open_tty(argv[2]), con = open_tty(argv[3]);
	const char *agent = agent_dev();

	if (agent && fork() == 0)
		agent_worker(name, agent, con);

	for (int i = 5; i < argc; i++) {
		int disk = !strncmp(argv[i], "disk=", 5), net = !strncmp(argv[i], "net=", 4);
		int rx = !strncmp(argv[i], "rx=", 3);

		if (!disk && !net && !rx) {
			fprintf(stderr, "kh-hb: unknown argument %s\n", argv[i]);
			return 2;
		}
		if (fork() == 0) {
			if (disk)
				disk_worker(name, argv[i] + 5, con);
			if (rx)
				rx_worker(name, argv[i] + 3, con);
			net_worker(name, argv[i] + 4, con);
		}
	}
	uint64_t pages = strtoull(argv[4], NULL, 0) * (1u << 20) / PAGE;
	uint64_t *mem = mmap(NULL, pages * PAGE, PROT_READ | PROT_WRITE,
			     MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
	char line[160];
	int n;

	if (mem == MAP_FAILED || pages == 0) {
		perror("mmap");
		return 1;
	}
	for (uint64_t i = 0; i < pages; i++)
		fill(mem + i * WORDS, i, 0);
	n = snprintf(line, sizeof(line), "VM-READY %s %llu pages\n", name,
		     (unsigned long long)pages);
	write(con, line, n);

	struct timespec next;
	clock_gettime(CLOCK_MONOTONIC, &next);
	double last_mono = ms(CLOCK_MONOTONIC), last_real = ms(CLOCK_REALTIME);
	uint64_t cursor = 0;

	for (uint64_t seq = 1;; seq++) {
		next.tv_nsec += 20 * 1000 * 1000;
		if (next.tv_nsec >= 1000000000) {
			next.tv_nsec -= 1000000000;
			next.tv_sec++;
		}
		clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &next, NULL);
		double mono = ms(CLOCK_MONOTONIC), real = ms(CLOCK_REALTIME);

		/* after a pause, beat on from now, not in a burst */
		struct timespec now;
		clock_gettime(CLOCK_MONOTONIC, &now);
		if (now.tv_sec > next.tv_sec + 1)
			next = now;
		n = snprintf(line, sizeof(line), "HB %s %llu %.1f %.1f\n", name,
			     (unsigned long long)seq, mono, real);
		write(hb, line, n);
		if (mono < last_mono) {
			n = snprintf(line, sizeof(line), "VM-CLOCK-BACK %s %llu %.1f\n",
				     name, (unsigned long long)seq, last_mono - mono);
			write(con, line, n);
		} else if (mono - last_mono > 1000) {
			n = snprintf(line, sizeof(line), "VM-GAP %s %llu %.1f %.1f\n",
				     name, (unsigned long long)seq,
				     mono - last_mono, real - last_real);
			write(con, line, n);
		}
		last_mono = mono;
		last_real = real;
		/* keep memory changing: 16 pages a beat get a new generation */
		for (int k = 0; k < 16; k++) {
			uint64_t *p = mem + cursor * WORDS;

			fill(p, cursor, p[1] + 1);
			cursor = (cursor + 1) % pages;
		}
		if (seq % 100 == 0) {
			uint64_t bad = pages;

			for (uint64_t i = 0; i < pages && bad == pages; i++)
				if (!check(mem + i * WORDS, i))
					bad = i;
			if (bad == pages)
				n = snprintf(line, sizeof(line), "VM-MEMCHECK %s %llu ok\n",
					     name, (unsigned long long)seq);
			else
				n = snprintf(line, sizeof(line),
					     "VM-MEMCHECK %s %llu BAD page %llu\n", name,
					     (unsigned long long)seq, (unsigned long long)bad);
			write(con, line, n);
		}
	}
}
