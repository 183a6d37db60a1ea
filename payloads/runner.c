/*
 * lab-runner: run a batch of jobs in the guest, each under its own deadline, and stream each result back framed.
 *
 * usage: lab-runner JOB_FILE SECONDS   (JOB_FILE "-": standard input)
 *
 * JOB_FILE (written by lab.measure.batch; shipped on the runner's stdin, never in a command string) is a sequence of records "TAG LEN\n" + LEN bytes +
 * "\n", after a first line "LAB-JOBS 1\n". Tags: K (a job's key: starts a job), A (one argv element), E (one
 * NAME=VALUE of the job's environment: a job sees only these), W and V (a file path and the bytes written to it
 * before the exec, e.g. the THP mode), R (run the job; LEN 0). A file that is not exactly this is refused whole
 * (exit 65) before anything runs.
 *
 * Each job runs in a session and process group of its own, stdin /dev/null, stdout and stderr into memory files.
 * One timer (sigtimedwait on SIGCHLD) enforces the deadline: at SECONDS the whole group gets SIGKILL. When the
 * job's first process has ended, whatever is left of its group is killed too (a run costs one run, never more),
 * and the runner, a child subreaper, reaps what it inherits. Then it writes, in one piece:
 *
 *   "@@LAB-RUN KEY STATUS DEADLINE OOM OUTLEN ERRLEN\n" + stdout + stderr + "\n@@LAB-END KEY\n"
 *
 * STATUS is the exit status (128 + N: killed by signal N), DEADLINE 1 if the timer killed it, OOM the guest's
 * oom_kill count's growth during the run (/proc/vmstat). Exit status: 0 all jobs ran; 64 usage; 65 a malformed
 * job file; 70 the runner itself failed (a message on stderr says which call).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

enum { MAX_WRITES = 8, MAX_KEY = 200 };

struct job {
	const char *key;
	char **argv, **envp;  /* NULL-terminated slices of one pointer pool */
	char **writes;        /* path, value, path, value, ..., NULL */
};

static int die(const char *what)
{
	fprintf(stderr, "lab-runner: %s: %s\n", what, strerror(errno));
	exit(70);
}

/* The whole job file: a path, or "-" for standard input (read to its end: a pipe has no size). */
static char *slurp(const char *path, size_t *len)
{
	int fd = strcmp(path, "-") ? open(path, O_RDONLY | O_CLOEXEC) : 0;
	size_t got = 0, cap = 65536;
	char *buf = malloc(cap + 1);
	ssize_t n;
	if (fd < 0 || !buf)
		die(path);
	while ((n = read(fd, buf + got, cap - got)) != 0) {
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			die(path);
		got += (size_t)n;
		if (got == cap && !(buf = realloc(buf, (cap *= 2) + 1)))
			die("realloc");
	}
	if (fd != 0)
		close(fd);
	buf[got] = 0;
	*len = got;
	return buf;
}

/* One "TAG LEN\n" + LEN bytes + "\n" record at *pos: its tag, and its bytes NUL-terminated in place (bytes that
 * hold a NUL themselves are refused: every field is a C string). */
static int record(char *buf, size_t len, size_t *pos, char *tag, char **data)
{
	size_t p = *pos, n = 0;
	if (p + 3 > len || buf[p + 1] != ' ')
		return -1;
	*tag = buf[p];
	p += 2;
	if (buf[p] < '0' || buf[p] > '9')
		return -1;
	while (p < len && buf[p] >= '0' && buf[p] <= '9') {
		if (n > len)
			return -1;
		n = n * 10 + (size_t)(buf[p++] - '0');
	}
	if (p >= len || buf[p] != '\n' || n >= len - p - 1 || buf[p + 1 + n] != '\n')
		return -1;
	*data = buf + p + 1;
	buf[p + 1 + n] = 0;
	if (strlen(*data) != n)
		return -1;
	*pos = p + 2 + n;
	return 0;
}

/* Jobs in order K A+ E* (W V)* R; anything else refuses the file. In the pool, a job is its argv, NULL, its
 * environment, NULL, its (path, value) writes, NULL. */
static int parse(char *buf, size_t len, struct job *jobs, char **pool)
{
	static const char magic[] = "LAB-JOBS 1\n";
	enum { KEY, ARGV, ENV, WRITES } state = KEY;
	size_t pos = sizeof magic - 1;
	int n = 0, args = 0, writes = 0, value = 0;
	char tag, *data, **at = pool;
	struct job *j = NULL;
	if (len < pos || memcmp(buf, magic, pos))
		return -1;
	while (pos < len) {
		if (record(buf, len, &pos, &tag, &data) != 0)
			return -1;
		if (tag == 'K') {
			if (state != KEY || !*data || strlen(data) > MAX_KEY || strpbrk(data, " \t\n"))
				return -1;
			j = &jobs[n++];
			j->key = data;
			j->argv = at;
			state = ARGV;
			args = 0;
			continue;
		}
		if (state == KEY || (state == ARGV && tag != 'A' && !args) || value != (tag == 'V'))
			return -1;
		if (tag == 'A' && state == ARGV) {
			*at++ = data;
			args++;
			continue;
		}
		if (state == ARGV) { /* the argv ends */
			*at++ = NULL;
			j->envp = at;
			state = ENV;
		}
		if (tag == 'E' && state == ENV) {
			if (!strchr(data, '='))
				return -1;
			*at++ = data;
			continue;
		}
		if (state == ENV) { /* the environment ends */
			*at++ = NULL;
			j->writes = at;
			state = WRITES;
			writes = 0;
		}
		if (tag == 'W' && ++writes <= MAX_WRITES) {
			*at++ = data;
			value = 1;
		} else if (tag == 'V') {
			*at++ = data;
			value = 0;
		} else if (tag == 'R' && !*data) {
			*at++ = NULL;
			state = KEY;
		} else {
			return -1;
		}
	}
	return state == KEY ? n : -1;
}

static long vmstat_oom(void)
{
	char text[16384];
	int fd = open("/proc/vmstat", O_RDONLY | O_CLOEXEC);
	ssize_t n = fd < 0 ? -1 : read(fd, text, sizeof text - 1);
	char *at;
	if (fd >= 0)
		close(fd);
	if (n <= 0)
		return 0;
	text[n] = 0;
	at = strstr(text, "\noom_kill ");
	return at ? atol(at + 10) : 0;
}

static void put_all(int fd, const char *data, size_t len)
{
	while (len) {
		ssize_t n = write(fd, data, len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			die("write to stdout");
		data += n;
		len -= (size_t)n;
	}
}

static void child(const struct job *j, int out, int err, const sigset_t *mask)
{
	char **w;
	int null = open("/dev/null", O_RDONLY);
	sigprocmask(SIG_SETMASK, mask, NULL);
	setsid();
	if (null < 0 || dup2(null, 0) < 0 || dup2(out, 1) < 0 || dup2(err, 2) < 0)
		_exit(126);
	if (null > 2)
		close(null);
	for (w = j->writes; *w; w += 2) {
		size_t n = strlen(w[1]);
		int fd = open(w[0], O_WRONLY | O_TRUNC | O_CLOEXEC);
		if (fd < 0 || write(fd, w[1], n) != (ssize_t)n || close(fd) != 0) {
			dprintf(2, "lab-runner: writing %s: %s\n", w[0], strerror(errno));
			_exit(1);
		}
	}
	execve(j->argv[0], j->argv, j->envp);
	dprintf(2, "lab-runner: cannot execute %s: %s\n", j->argv[0], strerror(errno));
	_exit(127);
}

/* Reap the children this subreaper inherited (orphans of earlier runs), never ``keep``. */
static void reap_others(pid_t keep)
{
	for (;;) {
		siginfo_t si;
		si.si_pid = 0;
		if (waitid(P_ALL, 0, &si, WEXITED | WNOHANG | WNOWAIT) != 0 || si.si_pid == 0 || si.si_pid == keep)
			return;
		waitpid(si.si_pid, NULL, 0);
	}
}

static long long elapsed_ms(const struct timespec *start)
{
	struct timespec now;
	clock_gettime(CLOCK_MONOTONIC, &now);
	return (now.tv_sec - start->tv_sec) * 1000LL + (now.tv_nsec - start->tv_nsec) / 1000000L;
}

static long oom_seen; /* oom_kill after the previous run (or at the start): one /proc/vmstat read per run */

static void run(const struct job *j, int seconds, int out, int err, const sigset_t *old)
{
	sigset_t chld;
	struct timespec start;
	siginfo_t si;
	int status = 0, deadline = 0, code, i;
	long oom = oom_seen;
	pid_t pid;
	off_t olen, elen;
	char head[512], *data;

	if (ftruncate(out, 0) || ftruncate(err, 0) || lseek(out, 0, SEEK_SET) || lseek(err, 0, SEEK_SET))
		die("ftruncate");
	sigemptyset(&chld);
	sigaddset(&chld, SIGCHLD);
	clock_gettime(CLOCK_MONOTONIC, &start);
	pid = fork();
	if (pid < 0)
		die("fork");
	if (pid == 0)
		child(j, out, err, old);
	for (;;) { /* until the job's first process has ended (left a zombie: its PID and group stay ours) */
		si.si_pid = 0;
		if (waitid(P_PID, (id_t)pid, &si, WEXITED | WNOHANG | WNOWAIT) != 0 && errno != EINTR)
			die("waitid");
		if (si.si_pid == pid)
			break;
		reap_others(pid);
		if (deadline) {
			sigwaitinfo(&chld, NULL);
		} else {
			long long left = seconds * 1000LL - elapsed_ms(&start);
			if (left <= 0) {
				deadline = 1;
				kill(-pid, SIGKILL);
			} else {
				struct timespec ts = {left / 1000, (left % 1000) * 1000000L};
				sigtimedwait(&chld, NULL, &ts); /* a SIGCHLD, the deadline, or EINTR: the loop looks again */
			}
		}
	}
	kill(-pid, SIGKILL); /* what is left of the run's group (its leader is a zombie: the group ID is still its) */
	if (waitpid(pid, &status, 0) != pid)
		die("waitpid");
	/* The next run starts when this one's processes are gone: killed members die asynchronously, and as their
	 * parents die they become this subreaper's children, reaped here. Bounded (5 s): a process stuck in the kernel
	 * cannot hang the batch. */
	for (i = 0; i < 500 && kill(-pid, 0) == 0; i++) {
		struct timespec ts = {0, 10000000L};
		reap_others(0);
		sigtimedwait(&chld, NULL, &ts);
	}
	reap_others(0);
	code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
	olen = lseek(out, 0, SEEK_END);
	elen = lseek(err, 0, SEEK_END);
	if (olen < 0 || elen < 0)
		die("lseek");
	data = malloc((size_t)olen + (size_t)elen + 1);
	if (!data || pread(out, data, (size_t)olen, 0) != olen || pread(err, data + olen, (size_t)elen, 0) != elen)
		die("reading a run's output");
	oom_seen = vmstat_oom();
	snprintf(head, sizeof head, "@@LAB-RUN %s %d %d %ld %lld %lld\n", j->key, code, deadline, oom_seen - oom,
		 (long long)olen, (long long)elen);
	put_all(1, head, strlen(head));
	put_all(1, data, (size_t)(olen + elen));
	snprintf(head, sizeof head, "\n@@LAB-END %s\n", j->key);
	put_all(1, head, strlen(head));
	free(data);
}

int main(int argc, char **argv)
{
	size_t len;
	char *buf, *end, **pool;
	struct job *jobs;
	int n, i, out, err;
	long seconds;
	sigset_t chld, old;

	if (argc != 3 || (seconds = strtol(argv[2], &end, 10)) < 1 || *end || seconds > 86400) {
		fprintf(stderr, "usage: lab-runner JOB_FILE SECONDS\n");
		return 64;
	}
	buf = slurp(argv[1], &len);
	/* A record is at least 5 bytes ("X 0\n\n") and a job at least 3 records: enough pointers for any file. */
	jobs = calloc(len / 15 + 1, sizeof *jobs);
	pool = calloc(len / 5 + 3 * (len / 15 + 1), sizeof *pool);
	if (!jobs || !pool)
		die("calloc");
	n = parse(buf, len, jobs, pool);
	if (n < 0) {
		fprintf(stderr, "lab-runner: %s is not a job file (refused whole; nothing ran)\n", argv[1]);
		return 65;
	}
	if (prctl(PR_SET_CHILD_SUBREAPER, 1) != 0)
		die("prctl(PR_SET_CHILD_SUBREAPER)");
	out = memfd_create("lab-run-stdout", MFD_CLOEXEC);
	err = memfd_create("lab-run-stderr", MFD_CLOEXEC);
	if (out < 0 || err < 0)
		die("memfd_create");
	sigemptyset(&chld);
	sigaddset(&chld, SIGCHLD);
	if (sigprocmask(SIG_BLOCK, &chld, &old) != 0)
		die("sigprocmask");
	signal(SIGPIPE, SIG_DFL);
	oom_seen = vmstat_oom();
	for (i = 0; i < n; i++)
		run(&jobs[i], (int)seconds, out, err, &old);
	return 0;
}
