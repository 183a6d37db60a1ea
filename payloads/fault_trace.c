/*
 * fault-trace: every page fault of one process, from its execve to its exit, as JSON.
 *
 * Runs a program as its child and records, with perf_event_open on that child and, inherited, on every process it
 * forks and thread it starts (no perf binary needed; each sample names its pid and tid):
 *   - one sample per page fault: minor or major, time (CLOCK_MONOTONIC, the clock the fault probe's
 *     stages are stamped with), instruction pointer, faulting address, thread;
 *   - the child's mmap/mmap2 records (file, offset, protection), so every address has a mapping;
 *   - the child's /proc/PID/maps at its exit (ptrace exit stop: the stack, heap, vdso as the kernel names them);
 *   - the child's own counters: rusage just before execve (what its fork cost) and at its end (wait4), which covers
 *     the children it waited for; the tracer is a subreaper, so descendants left behind come to it, are waited for,
 *     and their counters are added: the samples and the counters cover the same tree of processes;
 *   - the bytes of argument and environment strings execve copied (its get_user_pages faults raise no event).
 * Counting starts at the exec (enable_on_exec). Faults the kernel takes through get_user_pages while it
 * builds the new process count in rusage but raise no perf event; lab computes them as the difference.
 * Kernel instruction pointers are named by a separate call (--kernel-symbols), once for a batch of traces.
 *
 * usage: fault-trace [--pages N] [--out FILE] [--env-ppid NAME] -- PROGRAM [ARGS...]
 *        fault-trace --kernel-symbols FILE   (names the kernel IPs listed in FILE from /proc/kallsyms, as JSON)
 * --env-ppid NAME sets NAME to the tracer's PID in the program's environment (before the exec, so its cost is
 * in the pre-exec count): how the fault probe recognises the launcher that re-executed it, so a traced probe
 * runs exactly as it does under lab run.
 * The program's stdout is captured and embedded ("stdout"); its stderr is the tracer's.
 * Exit status: 0 traced (whatever the program's status, which is reported); 2 tracer failure;
 * 5 perf_event_open refused; 6 the program could not be executed; 64 usage.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <linux/perf_event.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/ptrace.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define SCHEMA "lab.fault-trace"
#define SCHEMA_VERSION 3
#define NEVENTS 2 /* minor, major */
#define MAXCPUS 64

/* The kernel's own struct rusage layout, which the raw system call fills (a 32-bit libc's has 64-bit times) */
struct kernel_rusage {
	long utime[2], stime[2];
	long maxrss, ixrss, idrss, isrss, minflt, majflt, nswap, inblock, oublock, msgsnd, msgrcv, nsignals, nvcsw, nivcsw;
};

struct sample {
	int major, kernel;
	uint32_t pid, tid;
	uint64_t time, ip, addr;
};

struct region {
	uint64_t time, start, len, pgoff;
	uint32_t pid, prot, flags;
	char path[256];
};

static struct sample *samples;
static size_t nsamples, capsamples;
static struct region *regions;
static size_t nregions, capregions;
static uint64_t lost;
static uint32_t traced_pid; /* the program; every other pid in the records is a descendant */
static long child_execs;  /* descendants' execve calls: each copies strings through get_user_pages, like the program's */

struct ring {
	int fd;
	struct perf_event_mmap_page *meta;
	unsigned char *data;
	size_t size; /* data area, a power of two */
};

static void die(const char *what)
{
	fprintf(stderr, "fault-trace: %s: %s\n", what, strerror(errno));
	exit(2);
}

static void *grow(void *p, size_t *cap, size_t need, size_t elem)
{
	if (need <= *cap)
		return p;
	*cap = *cap ? *cap * 2 : 1024;
	if (*cap < need)
		*cap = need;
	p = realloc(p, *cap * elem);
	if (!p)
		die("realloc");
	return p;
}

static void copy_out(const struct ring *r, uint64_t off, void *dst, size_t len)
{
	size_t i;
	for (i = 0; i < len; i++)
		((unsigned char *)dst)[i] = r->data[(off + i) & (r->size - 1)];
}

/* The ring's head and tail as the kernel's tools/perf reads them: a 64-bit atomic where the arch has one, else a
 * plain read and a fence (a 32-bit CPU has no 64-bit atomic load without libatomic; a trace's ring offsets stay far
 * below 4 GiB, so the upper half the kernel writes is always zero and a torn read cannot happen). */
static uint64_t read_head(struct perf_event_mmap_page *meta)
{
#if UINTPTR_MAX > 0xffffffffu
	return __atomic_load_n(&meta->data_head, __ATOMIC_ACQUIRE);
#else
	uint64_t head = *(volatile uint64_t *)&meta->data_head;
	__atomic_thread_fence(__ATOMIC_ACQUIRE);
	return head;
#endif
}

static void write_tail(struct perf_event_mmap_page *meta, uint64_t tail)
{
#if UINTPTR_MAX > 0xffffffffu
	__atomic_store_n(&meta->data_tail, tail, __ATOMIC_RELEASE);
#else
	__atomic_thread_fence(__ATOMIC_RELEASE);
	*(volatile uint64_t *)&meta->data_tail = tail;
#endif
}

/* Consume every complete record in the ring (the data between the kernel's head and our tail). */
static void drain(struct ring *r, int major)
{
	uint64_t head = read_head(r->meta), tail = r->meta->data_tail;
	unsigned char rec[4096];
	while (tail < head) {
		struct perf_event_header h;
		copy_out(r, tail, &h, sizeof h);
		if (h.size < sizeof h || h.size > sizeof rec) {
			fprintf(stderr, "fault-trace: corrupt ring record (size %u)\n", h.size);
			exit(2);
		}
		copy_out(r, tail, rec, h.size);
		if (h.type == PERF_RECORD_SAMPLE) {
			/* sample_type IP | TID | TIME | ADDR, in that order; TID is { u32 pid, tid } */
			unsigned char *u = rec + sizeof h;
			struct sample *s;
			samples = grow(samples, &capsamples, nsamples + 1, sizeof *samples);
			s = &samples[nsamples++];
			s->major = major;
			/* the kernel took it on the process's behalf (copying to or clearing its memory): the record says so
			 * itself; an address test cannot (s390x's kernel has an address space of its own) */
			s->kernel = (h.misc & PERF_RECORD_MISC_CPUMODE_MASK) == PERF_RECORD_MISC_KERNEL;
			memcpy(&s->ip, u, 8);
			memcpy(&s->pid, u + 8, 4);
			memcpy(&s->tid, u + 12, 4);
			memcpy(&s->time, u + 16, 8);
			memcpy(&s->addr, u + 24, 8);
		} else if (h.type == PERF_RECORD_MMAP2 || h.type == PERF_RECORD_MMAP) {
			/* pid, tid, addr, len, pgoff, [mmap2: dev/ino/generation, prot, flags], filename; sample_id: pid/tid, time */
			unsigned char *p = rec + sizeof h + 8;
			struct region *g;
			size_t fixed = h.type == PERF_RECORD_MMAP2 ? 24 + 24 + 8 : 24;
			size_t namemax = h.size - sizeof h - 8 - fixed - 16;
			regions = grow(regions, &capregions, nregions + 1, sizeof *regions);
			g = &regions[nregions++];
			memcpy(&g->pid, rec + sizeof h, 4);
			memcpy(&g->start, p, 8);
			memcpy(&g->len, p + 8, 8);
			memcpy(&g->pgoff, p + 16, 8);
			g->prot = g->flags = 0;
			if (h.type == PERF_RECORD_MMAP2) {
				memcpy(&g->prot, p + 48, 4);
				memcpy(&g->flags, p + 52, 4);
			}
			if (namemax >= sizeof g->path)
				namemax = sizeof g->path - 1;
			memcpy(g->path, p + fixed, namemax);
			g->path[namemax] = '\0';
			memcpy(&g->time, rec + h.size - 8, 8);
		} else if (h.type == PERF_RECORD_COMM && (h.misc & PERF_RECORD_MISC_COMM_EXEC)) {
			uint32_t who;
			memcpy(&who, rec + sizeof h, 4);
			if (who != traced_pid)
				child_execs++;
		} else if (h.type == PERF_RECORD_LOST) {
			uint64_t n;
			memcpy(&n, rec + sizeof h + 8, 8);
			lost += n;
		}
		tail += h.size;
	}
	write_tail(r->meta, tail);
}

/* One event of the process and, inherited, of every child it forks and thread it starts (their samples carry their
 * pid and tid). Inherited events can only be mapped per CPU, so there is one ring per event and online CPU. */
static int open_event(pid_t pid, int cpu, uint64_t config, int with_mmaps, struct ring *r, size_t pages)
{
	struct perf_event_attr a;
	long psize = sysconf(_SC_PAGESIZE);
	memset(&a, 0, sizeof a);
	a.size = sizeof a;
	a.type = PERF_TYPE_SOFTWARE;
	a.config = config;
	a.sample_period = 1;
	a.sample_type = PERF_SAMPLE_IP | PERF_SAMPLE_TID | PERF_SAMPLE_TIME | PERF_SAMPLE_ADDR;
	a.disabled = 1;
	a.inherit = 1;
	a.enable_on_exec = 1;
	a.exclude_hv = 1; /* kernel-mode faults stay: the kernel faulting on the process's behalf */
	a.use_clockid = 1;
	a.clockid = CLOCK_MONOTONIC;
	a.sample_id_all = 1;
	a.wakeup_events = 64;
	if (with_mmaps) {
		a.comm = 1;
		a.comm_exec = 1;
		a.mmap = 1;
		a.mmap2 = 1;
		a.mmap_data = 1;
	}
	r->fd = (int)syscall(SYS_perf_event_open, &a, pid, cpu, -1, PERF_FLAG_FD_CLOEXEC);
	if (r->fd < 0)
		return -1;
	r->size = pages * (size_t)psize;
	r->meta = mmap(NULL, r->size + (size_t)psize, PROT_READ | PROT_WRITE, MAP_SHARED, r->fd, 0);
	if (r->meta == MAP_FAILED)
		die("mmap of the perf ring");
	r->data = (unsigned char *)r->meta + psize;
	return 0;
}

/* Wait up to 20 ms for any ring to fill, then drain them all (rings alternate minor, major per CPU). */
static void pump(struct ring *rings, int nrings)
{
	static struct pollfd pf[NEVENTS * MAXCPUS];
	int i;
	for (i = 0; i < nrings; i++) {
		pf[i].fd = rings[i].fd;
		pf[i].events = POLLIN;
	}
	poll(pf, (nfds_t)nrings, 20);
	for (i = 0; i < nrings; i++)
		drain(&rings[i], i % NEVENTS);
}

static void json_string(FILE *f, const char *s, size_t n)
{
	size_t i;
	fputc('"', f);
	for (i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		if (c == '"' || c == '\\')
			fprintf(f, "\\%c", c);
		else if (c < 0x20 || c >= 0x7f)
			fprintf(f, "\\u%04x", c);
		else
			fputc(c, f);
	}
	fputc('"', f);
}

static char *slurp(int fd, size_t *len)
{
	size_t cap = 65536;
	char *buf = malloc(cap);
	ssize_t n;
	*len = 0;
	if (!buf)
		die("malloc");
	while ((n = read(fd, buf + *len, cap - *len)) > 0) {
		*len += (size_t)n;
		if (*len == cap) {
			cap *= 2;
			buf = realloc(buf, cap);
			if (!buf)
				die("realloc");
		}
	}
	if (n < 0)
		die("read");
	return buf;
}

static char *read_file(const char *path, size_t *len)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	char *buf;
	if (fd < 0) {
		*len = 0;
		return NULL;
	}
	buf = slurp(fd, len);
	close(fd);
	return buf;
}

static uint64_t parse_hex(const char **p)
{
	uint64_t v = 0;
	for (;; (*p)++) {
		char c = **p;
		if (c >= '0' && c <= '9')
			v = v * 16 + (uint64_t)(c - '0');
		else if (c >= 'a' && c <= 'f')
			v = v * 16 + (uint64_t)(c - 'a' + 10);
		else
			return v;
	}
}

/* --kernel-symbols FILE: name each kernel IP listed in FILE (decimal, one per line; as many as it holds: the host
 * ships the list as a file, never on a command line) by the nearest text symbol at or below it, in one pass over
 * /proc/kallsyms (170k-390k lines: seconds under TCG, so lab asks once per batch of traces). The kernel's own
 * symbols come sorted by address, so the pass stops at the first text symbol past every IP (usercopy helpers sit
 * early: this reads a tenth of riscv64's file). */
struct ksym {
	uint64_t ip, addr;
	char name[96];
};

static int kernel_symbols(const char *path)
{
	struct ksym *syms = NULL;
	size_t n = 0, cap = 0, i;
	uint64_t top = 0;
	char line[512];
	FILE *in = fopen(path, "r"), *k;
	if (!in) {
		perror(path);
		return 2;
	}
	while (fgets(line, sizeof line, in)) {
		if (line[0] < '0' || line[0] > '9')
			continue;
		if (n == cap) {
			struct ksym *more = realloc(syms, (cap = cap ? 2 * cap : 64) * sizeof *syms);
			if (!more) {
				fprintf(stderr, "fault-trace: out of memory\n");
				return 2;
			}
			syms = more;
		}
		syms[n].ip = strtoull(line, NULL, 10);
		syms[n].addr = 0;
		strcpy(syms[n].name, "?");
		if (syms[n].ip > top)
			top = syms[n].ip;
		n++;
	}
	fclose(in);
	k = fopen("/proc/kallsyms", "r");
	while (k && fgets(line, sizeof line, k)) {
		const char *p = line;
		uint64_t addr = parse_hex(&p);
		char type = p[0] ? p[1] : 0;
		if (!addr || (type != 't' && type != 'T' && type != 'w' && type != 'W'))
			continue;
		if (addr > top)
			break;
		for (i = 0; i < n; i++)
			if (addr <= syms[i].ip && addr >= syms[i].addr) {
				size_t len = strcspn(p + 3, " \t\n");
				syms[i].addr = addr;
				snprintf(syms[i].name, sizeof syms[i].name, "%.*s", (int)(len < 95 ? len : 95), p + 3);
			}
	}
	if (k)
		fclose(k);
	fputs("{", stdout);
	for (i = 0; i < n; i++) {
		printf("%s\"%" PRIu64 "\":", i ? "," : "", syms[i].ip);
		json_string(stdout, syms[i].name, strlen(syms[i].name));
	}
	fputs("}\n", stdout);
	free(syms);
	return fflush(stdout) == 0 ? 0 : 2;
}

static int usage(void)
{
	fputs("usage: fault-trace [--pages N] [--out FILE] [--env-ppid NAME] -- PROGRAM [ARGS...]\n"
	      "       fault-trace --kernel-symbols FILE\n",
	      stderr);
	return 64;
}

int main(int argc, char **argv)
{
	size_t pages = 256, outlen = 0, mapslen = 0, i;
	const char *outpath = NULL, *env_ppid = NULL;
	char me[32];
	int go[2], status_pipe[2], stdout_fd, status, status_orphan, argi, ncpus, nrings, reaped = 0;
	static struct ring rings[NEVENTS * MAXCPUS];
	struct rusage ru, orphan;
	long pre[3] = {-1, -1, -1};
	char maps_path[64], *maps = NULL, *out_text;
	FILE *out;
	pid_t pid;
	ssize_t got;

	if (argc == 3 && !strcmp(argv[1], "--kernel-symbols"))
		return kernel_symbols(argv[2]);
	for (argi = 1; argi < argc && strcmp(argv[argi], "--"); argi++) {
		if (!strcmp(argv[argi], "--pages") && argi + 1 < argc) {
			pages = strtoul(argv[++argi], NULL, 10);
			if (!pages || (pages & (pages - 1))) {
				fprintf(stderr, "fault-trace: --pages must be a power of two\n");
				return 64;
			}
		} else if (!strcmp(argv[argi], "--out") && argi + 1 < argc)
			outpath = argv[++argi];
		else if (!strcmp(argv[argi], "--env-ppid") && argi + 1 < argc)
			env_ppid = argv[++argi];
		else
			return usage();
	}
	if (argi + 1 >= argc)
		return usage();
	argv += argi + 1;

	snprintf(me, sizeof me, "%ld", (long)getpid());
	ncpus = (int)sysconf(_SC_NPROCESSORS_ONLN);
	if (ncpus < 1 || ncpus > MAXCPUS) {
		fprintf(stderr, "fault-trace: %d CPUs online; this tracer handles 1 to %d\n", ncpus, MAXCPUS);
		return 2;
	}
	nrings = NEVENTS * ncpus;
	/* Orphaned descendants come to the tracer, which reaps them and adds their counters: the whole tree adds up. */
	if (prctl(PR_SET_CHILD_SUBREAPER, 1) != 0)
		die("prctl");
	stdout_fd = (int)syscall(SYS_memfd_create, "fault-trace-stdout", 0);
	if (stdout_fd < 0 || pipe2(go, O_CLOEXEC) != 0 || pipe2(status_pipe, O_CLOEXEC) != 0)
		die("setup");
	pid = fork();
	if (pid < 0)
		die("fork");
	if (pid == 0) {
		struct kernel_rusage r;
		long m[4];
		char c, **e;
		close(go[1]);
		close(status_pipe[0]);
		if (read(go[0], &c, 1) != 1)
			_exit(127);
		if (dup2(stdout_fd, 1) < 0 || (env_ppid && setenv(env_ppid, me, 1) != 0))
			_exit(127);
		/* Twice: the first call may fault the result in (counted after its numbers were taken). */
		syscall(SYS_getrusage, RUSAGE_SELF, &r);
		syscall(SYS_getrusage, RUSAGE_SELF, &r);
		m[0] = 'R';
		m[1] = r.minflt;
		m[2] = r.majflt;
		m[3] = 0; /* the bytes of strings execve copies onto the new stack (through get_user_pages: no perf event) */
		for (e = argv; *e; e++)
			m[3] += (long)strlen(*e) + 1;
		for (e = environ; *e; e++)
			m[3] += (long)strlen(*e) + 1;
		if (write(status_pipe[1], m, sizeof m) != sizeof m)
			_exit(127);
		execvp(argv[0], argv);
		m[0] = 'E';
		m[1] = errno;
		if (write(status_pipe[1], m, sizeof m) != sizeof m)
			_exit(127);
		_exit(127);
	}
	close(go[0]);
	close(status_pipe[1]);
	traced_pid = (uint32_t)pid;
	if (ptrace(PTRACE_SEIZE, pid, NULL, (void *)(long)PTRACE_O_TRACEEXIT) != 0)
		die("ptrace");
	for (i = 0; i < (size_t)nrings; i++)
		if (open_event(pid, (int)(i / NEVENTS), i % NEVENTS ? PERF_COUNT_SW_PAGE_FAULTS_MAJ : PERF_COUNT_SW_PAGE_FAULTS_MIN,
			       i % NEVENTS == 0, &rings[i], pages) != 0)
			break;
	if (i < (size_t)nrings) {
		char paranoid[32] = "?";
		int e = errno, fd = open("/proc/sys/kernel/perf_event_paranoid", O_RDONLY);
		if (fd >= 0) {
			got = read(fd, paranoid, sizeof paranoid - 1);
			paranoid[got > 0 ? got : 0] = '\0';
			paranoid[strcspn(paranoid, "\n")] = '\0';
			close(fd);
		}
		fprintf(stderr, "fault-trace: perf_event_open refused: %s (kernel.perf_event_paranoid=%s%s)\n", strerror(e), paranoid,
			e == ENOENT || e == ENOSYS ? "; the kernel lacks CONFIG_PERF_EVENTS" : "");
		kill(pid, SIGKILL);
		waitpid(pid, NULL, 0);
		return 5;
	}
	if (write(go[1], "g", 1) != 1)
		die("write");
	{
		long m[4];
		got = read(status_pipe[0], m, sizeof m);
		if (got == (ssize_t)sizeof m && m[0] == 'R') {
			pre[0] = m[1];
			pre[1] = m[2];
			pre[2] = m[3];
			got = read(status_pipe[0], m, sizeof m); /* EOF: the exec happened */
		}
		if (got == (ssize_t)sizeof m && m[0] == 'E') {
			fprintf(stderr, "fault-trace: cannot execute %s: %s\n", argv[0], strerror((int)m[1]));
			waitpid(pid, NULL, 0);
			return 6;
		}
	}

	for (;;) {
		pid_t w;
		pump(rings, nrings);
		w = wait4(pid, &status, WNOHANG | __WALL, &ru);
		if (w < 0)
			die("wait4");
		if (w == 0)
			continue;
		if (WIFSTOPPED(status)) {
			int sig = WSTOPSIG(status), event = status >> 16;
			if (event == PTRACE_EVENT_EXIT) {
				snprintf(maps_path, sizeof maps_path, "/proc/%d/maps", (int)pid);
				free(maps);
				maps = read_file(maps_path, &mapslen);
				sig = 0;
			} else if (event != 0 || sig == SIGTRAP)
				sig = 0;
			ptrace(PTRACE_CONT, pid, NULL, (void *)(long)sig);
			continue;
		}
		break; /* exited or killed */
	}
	/* Descendants the program left behind: wait for each (the per-run deadline kills the whole group if they hang). */
	for (;;) {
		pid_t w = wait4(-1, &status_orphan, WNOHANG | __WALL, &orphan);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			if (errno == ECHILD)
				break;
			die("wait4");
		}
		if (w > 0) {
			ru.ru_minflt += orphan.ru_minflt;
			ru.ru_majflt += orphan.ru_majflt;
			reaped++;
			continue;
		}
		pump(rings, nrings);
	}
	for (i = 0; i < (size_t)nrings; i++)
		drain(&rings[i], (int)(i % NEVENTS));

	out = outpath ? fopen(outpath, "w") : stdout;
	if (!out)
		die(outpath);
	fprintf(out, "{\"schema\":\"%s\",\"schema_version\":%d,\"argv\":[", SCHEMA, SCHEMA_VERSION);
	for (i = 0; argv[i]; i++) {
		fputs(i ? "," : "", out);
		json_string(out, argv[i], strlen(argv[i]));
	}
	fprintf(out, "],\"pid\":%d,", (int)pid);
	if (WIFEXITED(status))
		fprintf(out, "\"exit_status\":%d,\"signal\":null,", WEXITSTATUS(status));
	else
		fprintf(out, "\"exit_status\":null,\"signal\":%d,", WTERMSIG(status));
	fprintf(out, "\"page_size\":%ld,\"clock\":\"monotonic\",\"pre_exec\":{\"minflt\":%ld,\"majflt\":%ld},\"exec_bytes\":%ld,",
		sysconf(_SC_PAGESIZE), pre[0], pre[1], pre[2]);
	fprintf(out, "\"orphans\":%d,\"child_execs\":%ld,", reaped, child_execs);
	fprintf(out, "\"rusage\":{\"minflt\":%ld,\"majflt\":%ld},\"lost\":%" PRIu64 ",", ru.ru_minflt, ru.ru_majflt, lost);
	fputs("\"samples\":[", out);
	for (i = 0; i < nsamples; i++)
		fprintf(out, "%s[%d,%" PRIu64 ",%" PRIu64 ",%" PRIu64 ",%" PRIu32 ",%" PRIu32 ",%d]", i ? "," : "", samples[i].major,
			samples[i].time, samples[i].ip, samples[i].addr, samples[i].tid, samples[i].pid, samples[i].kernel);
	fputs("],\"mmaps\":[", out);
	for (i = 0; i < nregions; i++) {
		const struct region *g = &regions[i];
		fprintf(out, "%s{\"time\":%" PRIu64 ",\"pid\":%" PRIu32 ",\"start\":%" PRIu64 ",\"len\":%" PRIu64 ",\"pgoff\":%" PRIu64
			     ",\"prot\":%" PRIu32 ",\"flags\":%" PRIu32 ",\"path\":",
			i ? "," : "", g->time, g->pid, g->start, g->len, g->pgoff, g->prot, g->flags);
		json_string(out, g->path, strlen(g->path));
		fputc('}', out);
	}
	fputs("],", out);
	fputs("\"maps_at_exit\":", out);
	json_string(out, maps ? maps : "", maps ? mapslen : 0);
	lseek(stdout_fd, 0, SEEK_SET);
	out_text = slurp(stdout_fd, &outlen);
	fputs(",\"stdout\":", out);
	json_string(out, out_text, outlen);
	fputs(",\"complete\":true}\n", out);
	if (fflush(out) != 0)
		die("write");
	return 0;
}
