/*
 * fork-touch: a program whose faults are mostly its children's, for lab explain's account of a process tree.
 *
 * It forks a child that touches WAITED_MIB of fresh memory and is waited for, and an orphan that touches
 * ORPHAN_MIB only after this program has exited (it waits for its pipe to close). The account must show both as
 * rows of their own ([child processes], by pid), every page touched counted, and an exec set-up of a page or two:
 * never the children's faults booked as the program's exec (issue 19.5). A third child execs /bin/busybox: its own
 * exec set-up counts in the program's rusage too, and the bound allows for it.
 */
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define WAITED_MIB 8
#define ORPHAN_MIB 1

static void touch(size_t bytes)
{
	size_t page = (size_t)sysconf(_SC_PAGESIZE), i;
	volatile unsigned char *p = malloc(bytes);
	if (!p)
		_exit(3);
	for (i = 0; i < bytes; i += page)
		p[i] = 1;
}

int main(void)
{
	int gate[2];
	pid_t waited, orphan, runner;
	char c;
	if (pipe(gate) != 0)
		return 2;
	orphan = fork();
	if (orphan == 0) {
		close(gate[1]);
		while (read(gate[0], &c, 1) > 0) /* EOF: the parent has exited */
			;
		touch((size_t)ORPHAN_MIB << 20);
		_exit(0);
	}
	close(gate[0]);
	waited = fork();
	if (waited == 0) {
		touch((size_t)WAITED_MIB << 20);
		_exit(0);
	}
	runner = fork();
	if (runner == 0) {
		execl("/bin/busybox", "busybox", "true", (char *)0);
		_exit(127);
	}
	if (orphan < 0 || waited < 0 || runner < 0 || waitpid(waited, NULL, 0) != waited || waitpid(runner, NULL, 0) != runner)
		return 2;
	return 0; /* the orphan's gate closes with this process */
}
