/*
 * lab-reseed: give a guest restored from a snapshot a random number generator of its own.
 *
 * Every guest restored from one snapshot starts from the same kernel CRNG state. Writing host randomness to
 * /dev/urandom only mixes it into the input pool: the CRNG that getrandom() and /dev/urandom read keeps its key
 * until the kernel's next scheduled reseed, so two restored guests can print the same bytes until then. This
 * program adds the host's seed bytes to the input pool with credit (RNDADDENTROPY) and then forces the CRNG to
 * reseed from that pool at once (RNDRESEEDCRNG): from its exit on, the guest's random numbers depend on the seed.
 *
 * usage: lab-reseed SEED_FILE   (32 to 256 bytes from the host; the file is deleted once read)
 * Exit status: 0 reseeded; 1 an ioctl or the seed file failed (the message says which); 64 usage.
 * Needs CAP_SYS_ADMIN (lab runs it as root).
 */
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

/* From <linux/random.h>, which musl's sysroot does not carry; the libc's _IOW/_IO encode them per arch. */
#ifndef RNDADDENTROPY
#define RNDADDENTROPY _IOW('R', 0x03, int[2])
#endif
#ifndef RNDRESEEDCRNG
#define RNDRESEEDCRNG _IO('R', 0x07)
#endif

enum { MIN_SEED = 32, MAX_SEED = 256 };

int main(int argc, char **argv)
{
    struct {
        int entropy_count;
        int buf_size;
        unsigned char buf[MAX_SEED];
    } req;
    if (argc != 2) {
        fprintf(stderr, "usage: lab-reseed SEED_FILE\n");
        return 64;
    }
    int seed = open(argv[1], O_RDONLY);
    if (seed < 0) {
        perror(argv[1]);
        return 1;
    }
    ssize_t n = read(seed, req.buf, sizeof req.buf);
    close(seed);
    unlink(argv[1]);
    if (n < MIN_SEED) {
        fprintf(stderr, "lab-reseed: %s holds %zd bytes, fewer than %d\n", argv[1], n, MIN_SEED);
        return 1;
    }
    req.entropy_count = (int)n * 8;
    req.buf_size = (int)n;
    int rnd = open("/dev/urandom", O_RDWR);
    if (rnd < 0) {
        perror("/dev/urandom");
        return 1;
    }
    if (ioctl(rnd, RNDADDENTROPY, &req) < 0) {
        perror("lab-reseed: RNDADDENTROPY");
        return 1;
    }
    if (ioctl(rnd, RNDRESEEDCRNG) < 0) {
        perror("lab-reseed: RNDRESEEDCRNG");
        return 1;
    }
    memset(req.buf, 0, sizeof req.buf);
    close(rnd);
    return 0;
}
