// SPDX-License-Identifier: GPL-2.0
/*
 * kh-hb: the workload of the Linux test VM (tools/guest/vm-init runs it as
 * its last step). C like tools/guest/tinyvm.c: the VM's initramfs is busybox
 * without a libc, and one `gcc -static` line in tools/mkinitramfs.sh builds
 * it; a Rust binary would need a second, static (crt-static) build of the
 * workspace just for this loop.
 *
 *   kh-hb NAME HB_TTY CON_TTY MEM_MIB
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
 */
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
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
	if (argc != 5) {
		fprintf(stderr, "usage: kh-hb NAME HB_TTY CON_TTY MEM_MIB\n");
		return 2;
	}
	const char *name = argv[1];
	int hb = open_tty(argv[2]), con = open_tty(argv[3]);
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
