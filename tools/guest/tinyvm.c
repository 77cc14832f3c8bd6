// SPDX-License-Identifier: GPL-2.0
/*
 * tinyvm: a minimal test VM for the rig (a Multiboot kernel for QEMU's
 * -kernel). It fills almost all of its RAM with pseudo-random data, prints
 * "VM-READY <name> <sum>" on COM2, then every 20 ms (PIT interrupt, HLT in
 * between) prints "HB <name> <n>" on COM1 and every 100 beats re-checks all
 * of that RAM: "VM-MEMCHECK <name> <n> ok|BAD" on COM2. The same lines as
 * the Linux test VM (tools/guest/vm-init), with a far smaller footprint in
 * the nested TCG rig: no paging, one interrupt source, a few port writes
 * per beat; beats go on during a check, so only a pause of the VM makes a
 * gap. Command line: vmname=NAME, memcheck=BEATS (default 100), beat=TICKS
 * (a heartbeat every TICKS PIT ticks, default 1: 20 ms), rigfault (stop on
 * a KVM internal error before booting), separated by spaces or commas.
 * Each beat costs about 25 port accesses, each an exit to QEMU: on a
 * nested, emulated host that is most of the VM's cost, so a slow host
 * (the debug rig) asks for fewer beats.
 * The memory check covers tinyvm itself too (its code, GDT and IDT, below
 * the 4 MiB it fills): "BAD image" when they changed. A CPU exception
 * prints "VM-FAULT <name> vec=V err=E eip=X" on COM2 and stops the VM
 * (cli; hlt), so a fault says which one instead of returning to garbage;
 * other interrupts than IRQ0's (vectors 33-255) are counted ("VM-STRAY")
 * and ignored.
 *
 * Build: gcc -m32 -ffreestanding -fno-pic -fno-pie -no-pie -nostdlib -static
 *        -O2 -fno-toplevel-reorder -Wl,-Ttext=0x100000 (tools/vm-run.sh)
 */
typedef unsigned int u32;
typedef unsigned short u16;
typedef unsigned char u8;

#define COM1 0x3f8 /* ttyS0: heartbeat */
#define COM2 0x2f8 /* ttyS1: console */
#define FILL_START (4u << 20)

/* Multiboot v1 header (flags: page-align modules, want memory info). */
__asm__(".section .text\n"
	".align 4\n"
	"image_start:\n"
	"mb_header: .long 0x1BADB002, 0x00000003, -(0x1BADB002 + 0x00000003)\n"
	".globl _start\n"
	"_start:\n"
	"  cli\n"
	"  mov $stack_top, %esp\n"
	"  push %ebx\n"
	"  call tiny_main\n"
	"1: hlt\n"
	"  jmp 1b\n"
	/* IRQ0: count a tick, acknowledge the PIC */
	"irq0:\n"
	"  push %eax\n"
	"  incl ticks\n"
	"  mov $0x20, %al\n"
	"  out %al, $0x20\n"
	"  pop %eax\n"
	"  iret\n"
	/* any other interrupt: count it (spurious IRQ7 has no EOI) */
	"ignore:\n"
	"  incl strays\n"
	"  iret\n"
	/* CPU exceptions: the vector (and an error code, pushed by the CPU
	 * for 8, 10-14, 17, 21, 29 and 30, else 0 here) to fault() */
	".irp v, 0,1,2,3,4,5,6,7,9,15,16,18,19,20,22,23,24,25,26,27,28,31\n"
	"exc\\v: push $0\n push $\\v\n jmp exc_common\n"
	".endr\n"
	".irp v, 8,10,11,12,13,14,17,21,29,30\n"
	"exc\\v: push $\\v\n jmp exc_common\n"
	".endr\n"
	"exc_common:\n"
	"  cli\n"
	"  mov $0x10, %ax\n mov %ax, %ds\n mov %ax, %es\n"
	"  call fault\n"
	"2: cli\n hlt\n jmp 2b\n"
	".section .rodata\n"
	".align 4\n"
	"exc_stubs:\n"
	".irp v, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31\n"
	".long exc\\v\n"
	".endr\n"
	".text\n");

extern void irq0(void), ignore(void);
extern void (*const exc_stubs[32])(void);
extern const char image_start[], etext[];
volatile u32 ticks, strays;
static u8 stack[16384] __attribute__((aligned(16), used));
__asm__(".globl stack_top\n .set stack_top, stack + 16384\n");

static unsigned long long gdt[3] = {
	0,
	0x00cf9a000000ffffull, /* 0x08: flat 32-bit code */
	0x00cf92000000ffffull, /* 0x10: flat data */
};
static unsigned long long idt[256];
static struct __attribute__((packed)) { u16 limit; u32 base; } gdtr, idtr;

static inline void outb(u16 p, u8 v) { __asm__ volatile("outb %0, %1" : : "a"(v), "Nd"(p)); }
static inline u8 inb(u16 p) { u8 v; __asm__ volatile("inb %1, %0" : "=a"(v) : "Nd"(p)); return v; }

static void putc(u16 port, char c)
{
	while (!(inb(port + 5) & 0x20))
		;
	outb(port, c);
}
static void puts(u16 port, const char *s) { while (*s) putc(port, *s++); }
static void putu(u16 port, u32 v, int base)
{
	char b[12]; int i = 0;
	do { u32 d = v % base; b[i++] = d < 10 ? '0' + d : 'a' + d - 10; v /= base; } while (v);
	while (i) putc(port, b[--i]);
}

static void gate(int vec, void (*h)(void))
{
	u32 a = (u32)h;
	idt[vec] = (a & 0xffff) | (0x08ull << 16) | (0x8eull << 40) | ((unsigned long long)(a >> 16) << 48);
}

static u32 xorshift(u32 *s) { u32 x = *s; x ^= x << 13; x ^= x >> 17; x ^= x << 5; return *s = x; }

static u32 fill_end;
static u32 seed0;
static char name[32] = "tinyvm";

/* An exception: which one, where, and stop (exc_common halts after). The
 * stack holds vector, error code, EIP, CS, EFLAGS. */
__attribute__((used, regparm(0))) void fault(u32 vec, u32 err, u32 eip)
{
	puts(COM2, "VM-FAULT "); puts(COM2, name); puts(COM2, " vec="); putu(COM2, vec, 10);
	puts(COM2, " err="); putu(COM2, err, 16); puts(COM2, " eip="); putu(COM2, eip, 16);
	puts(COM2, "\n");
}

/* FNV-1a over [a, b) */
static u32 fnv(const u8 *a, const u8 *b, u32 h)
{
	while (a < b)
		h = (h ^ *a++) * 16777619u;
	return h;
}
/* tinyvm's own code (.text up to etext; the read-only data the linker
 * puts after it is not covered), GDT and IDT: none changes after start-up
 * (the CPU sets the GDT's accessed bits at the first segment loads,
 * before the first sum) */
static u32 image_sum(void)
{
	u32 h = fnv((const u8 *)image_start, (const u8 *)etext, 2166136261u);
	h = fnv((const u8 *)gdt, (const u8 *)(gdt + 3), h);
	return fnv((const u8 *)idt, (const u8 *)(idt + 256), h);
}
static u32 beat, next_tick, beat_ticks = 1;

/* Print a heartbeat if a tick passed since the last one; called from the
 * memory checks too, so a long check never shows up as a gap. */
static void maybe_beat(void)
{
	if ((int)(ticks - next_tick) < 0)
		return;
	next_tick = ticks + beat_ticks;
	beat++;
	puts(COM1, "HB "); puts(COM1, name); puts(COM1, " "); putu(COM1, beat, 10); puts(COM1, "\n");
}

static u32 checksum(void)
{
	u32 h = 2166136261u;
	for (volatile u32 *p = (u32 *)FILL_START; p < (u32 *)fill_end; p++) {
		h = (h ^ *p) * 16777619u;
		if (!((u32)p & 0xffff))
			maybe_beat();
	}
	return h;
}

/* The value of "key=" in the command line c, or 0. */
static const char *param(const char *c, const char *key)
{
	for (const char *start = c; *c; c++) {
		const char *k = key, *p = c;
		if (c != start && c[-1] != ' ' && c[-1] != ',')
			continue;
		while (*k && *p == *k) { p++; k++; }
		if (!*k)
			return p;
	}
	return 0;
}

void tiny_main(u32 *mbi)
{
	u32 i, sum, image, checked = 0, every = 100;

	gdtr.limit = sizeof(gdt) - 1; gdtr.base = (u32)gdt;
	__asm__ volatile("lgdt %0\n ljmp $0x08, $1f\n 1:\n mov $0x10, %%ax\n"
			 " mov %%ax, %%ds\n mov %%ax, %%es\n mov %%ax, %%ss\n mov %%ax, %%fs\n mov %%ax, %%gs"
			 : : "m"(gdtr) : "eax", "memory");
	for (i = 0; i < 256; i++)
		gate(i, i < 32 ? exc_stubs[i] : ignore);
	gate(32, irq0);
	idtr.limit = sizeof(idt) - 1; idtr.base = (u32)idt;
	__asm__ volatile("lidt %0" : : "m"(idtr));

	/* 8259: IRQ 0-7 -> vectors 32-39, 8-15 -> 40-47; only IRQ0 unmasked. */
	outb(0x20, 0x11); outb(0xa0, 0x11); outb(0x21, 32); outb(0xa1, 40);
	outb(0x21, 4); outb(0xa1, 2); outb(0x21, 1); outb(0xa1, 1);
	outb(0x21, 0xfe); outb(0xa1, 0xff);
	/* PIT channel 0, mode 2, 50 Hz */
	outb(0x43, 0x34); outb(0x40, 23864 & 0xff); outb(0x40, 23864 >> 8);

	if (mbi[0] & 4) { /* command line */
		const char *c = (const char *)mbi[4], *v;
		if ((v = param(c, "vmname="))) {
			for (i = 0; i < sizeof(name) - 1 && v[i] && v[i] != ' ' && v[i] != ','; i++)
				name[i] = v[i];
			name[i] = 0;
		}
		if ((v = param(c, "beat="))) {
			for (beat_ticks = 0; *v >= '0' && *v <= '9' && beat_ticks < 1000; v++)
				beat_ticks = beat_ticks * 10 + *v - '0';
			if (!beat_ticks)
				beat_ticks = 1;
		}
		if ((v = param(c, "memcheck="))) {
			for (every = 0; *v >= '0' && *v <= '9'; v++)
				every = every * 10 + *v - '0';
			if (!every)
				every = 100;
		}
	}
	/* rigfault: jump to MMIO (the IOAPIC) before booting, as a rig fault
	 * did once; KVM cannot fetch code there and stops the VM with an
	 * internal error (selftests/upgrade/upgrade.sh tests its retry). */
	if ((mbi[0] & 4) && param((const char *)mbi[4], "rigfault"))
		((void (*)(void))0xfec00000u)();
	/* all RAM above 4 MiB but the last MiB (mem_upper: KiB above 1 MiB) */
	fill_end = (mbi[0] & 1) ? (1u << 20) + mbi[2] * 1024 - (1u << 20) : FILL_START;
	{
		u32 lo, hi;
		__asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi));
		seed0 = (lo ^ hi) | 1;
	}
	{
		u32 s = seed0;
		for (u32 *p = (u32 *)FILL_START; p < (u32 *)fill_end; p++)
			*p = xorshift(&s);
	}
	sum = checksum();
	image = image_sum();
	puts(COM2, "VM-READY "); puts(COM2, name); puts(COM2, " ");
	putu(COM2, sum, 16); puts(COM2, " mem="); putu(COM2, (fill_end - FILL_START) >> 20, 10);
	puts(COM2, "M range="); putu(COM2, FILL_START, 16); puts(COM2, "-"); putu(COM2, fill_end, 16);
	puts(COM2, "\n");

	__asm__ volatile("sti");
	next_tick = ticks + beat_ticks;
	for (;;) {
		while ((int)(ticks - next_tick) < 0)
			__asm__ volatile("hlt");
		maybe_beat();
		if (beat - checked >= every) {
			u32 at = beat, ok = checksum() == sum, img = image_sum() == image;
			checked = beat;
			puts(COM2, "VM-MEMCHECK "); puts(COM2, name); puts(COM2, " "); putu(COM2, at, 10);
			puts(COM2, !ok ? " BAD\n" : !img ? " BAD image\n" : " ok\n");
			u32 n = __atomic_exchange_n(&strays, 0, __ATOMIC_SEQ_CST);
			if (n) {
				puts(COM2, "VM-STRAY "); puts(COM2, name); puts(COM2, " "); putu(COM2, n, 10);
				puts(COM2, " interrupts on vectors other than IRQ0's\n");
			}
		}
	}
}
