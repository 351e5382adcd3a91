/*
 * The emulated link: moves IP packets between two TUN devices, each opened
 * inside its own network namespace, through a model of one link per
 * direction: a token-bucket rate (packets leave one after another at the
 * link's rate), a drop-tail queue, a one-way delay and seeded random loss.
 * Compiled by the WAN bench at its start (tests/bench/link/emulator.ts).
 *
 * usage: forwarder NETNS_A TUN_A NETNS_B TUN_B RATE_BPS DELAY_US LOSS QUEUE_BYTES SEED
 * Prints "ready" once both devices are open; on SIGTERM/SIGINT prints one
 * line of counters per direction and exits.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/if_tun.h>
#include <net/if.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

#define SLOT 2048
#define SLOTS 32768 /* per direction: enough for 4 MiB queued plus 300 ms at 100 Mbit/s */

struct packet {
  int64_t due; /* ns: when it leaves the far end of the link */
  uint16_t length;
  unsigned char data[SLOT];
};

struct direction {
  int from, to;
  struct packet *ring;
  unsigned head, count;
  int64_t link_free; /* ns: when the sender side finishes serialising the last packet */
  uint64_t packets, bytes, lost, dropped, delivered;
};

static volatile sig_atomic_t stopping = 0;
static double rate_bps, loss;
static int64_t delay_ns, queue_bytes;
static uint64_t rng;

static void on_signal(int sig) {
  (void)sig;
  stopping = 1;
}

static int64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* xorshift64*: the same seed gives the same loss pattern for the same packets. */
static double uniform(void) {
  rng ^= rng >> 12;
  rng ^= rng << 25;
  rng ^= rng >> 27;
  return (double)((rng * 2685821657736338717ULL) >> 11) / 9007199254740992.0;
}

static int open_tun(const char *netns, const char *name) {
  char path[256];
  snprintf(path, sizeof path, "/var/run/netns/%s", netns);
  int ns = open(path, O_RDONLY | O_CLOEXEC);
  if (ns < 0 || setns(ns, CLONE_NEWNET) < 0) {
    fprintf(stderr, "Cannot enter network namespace %s: %s\n", netns, strerror(errno));
    exit(1);
  }
  close(ns);
  int fd = open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) {
    fprintf(stderr, "Cannot open /dev/net/tun: %s\n", strerror(errno));
    exit(1);
  }
  struct ifreq ifr;
  memset(&ifr, 0, sizeof ifr);
  ifr.ifr_flags = IFF_TUN | IFF_NO_PI;
  strncpy(ifr.ifr_name, name, IFNAMSIZ - 1);
  if (ioctl(fd, TUNSETIFF, &ifr) < 0) {
    fprintf(stderr, "Cannot attach TUN device %s in %s: %s\n", name, netns, strerror(errno));
    exit(1);
  }
  return fd;
}

/* Reads every packet waiting on d->from and queues or drops it. */
static void receive(struct direction *d) {
  for (;;) {
    struct packet *p = &d->ring[(d->head + d->count) % SLOTS];
    ssize_t n = read(d->from, p->data, SLOT);
    if (n <= 0) return;
    int64_t now = now_ns();
    d->packets++;
    d->bytes += n;
    if (loss > 0 && uniform() < loss) {
      d->lost++;
      continue;
    }
    int64_t start = d->link_free > now ? d->link_free : now;
    /* Bytes still waiting to be serialised: the drop-tail queue's fill. */
    int64_t backlog = (int64_t)((double)(start - now) * rate_bps / 8e9);
    if (backlog + n > queue_bytes || d->count >= SLOTS) {
      d->dropped++;
      continue;
    }
    d->link_free = start + (int64_t)((double)n * 8e9 / rate_bps);
    p->due = d->link_free + delay_ns;
    p->length = (uint16_t)n;
    d->count++;
  }
}

/* Writes every packet whose time has come; returns ns until the next one, or -1. */
static int64_t deliver(struct direction *d, int64_t now) {
  while (d->count > 0) {
    struct packet *p = &d->ring[d->head];
    if (p->due > now) return p->due - now;
    if (write(d->to, p->data, p->length) == p->length) d->delivered++;
    else d->dropped++;
    d->head = (d->head + 1) % SLOTS;
    d->count--;
  }
  return -1;
}

int main(int argc, char **argv) {
  if (argc != 10) {
    fprintf(stderr, "usage: %s NETNS_A TUN_A NETNS_B TUN_B RATE_BPS DELAY_US LOSS QUEUE_BYTES SEED\n",
            argv[0]);
    return 2;
  }
  int a = open_tun(argv[1], argv[2]);
  int b = open_tun(argv[3], argv[4]);
  rate_bps = atof(argv[5]);
  delay_ns = atoll(argv[6]) * 1000LL;
  loss = atof(argv[7]);
  queue_bytes = atoll(argv[8]);
  rng = strtoull(argv[9], NULL, 10) * 0x9E3779B97F4A7C15ULL + 1;
  struct direction dirs[2] = {{.from = a, .to = b}, {.from = b, .to = a}};
  for (int i = 0; i < 2; i++) {
    dirs[i].ring = malloc(sizeof(struct packet) * SLOTS);
    if (!dirs[i].ring) {
      fprintf(stderr, "Cannot allocate the link's queue\n");
      return 1;
    }
  }
  signal(SIGTERM, on_signal);
  signal(SIGINT, on_signal);
  printf("ready\n");
  fflush(stdout);
  struct pollfd fds[2] = {{.fd = a, .events = POLLIN}, {.fd = b, .events = POLLIN}};
  while (!stopping) {
    int64_t now = now_ns();
    int64_t wait = -1;
    for (int i = 0; i < 2; i++) {
      int64_t next = deliver(&dirs[i], now);
      if (next >= 0 && (wait < 0 || next < wait)) wait = next;
    }
    struct timespec timeout = {.tv_sec = 1, .tv_nsec = 0};
    if (wait >= 0) {
      timeout.tv_sec = wait / 1000000000LL;
      timeout.tv_nsec = wait % 1000000000LL;
    }
    if (ppoll(fds, 2, &timeout, NULL) < 0 && errno != EINTR) break;
    if (fds[0].revents & POLLIN) receive(&dirs[0]);
    if (fds[1].revents & POLLIN) receive(&dirs[1]);
  }
  for (int i = 0; i < 2; i++) {
    struct direction *d = &dirs[i];
    printf("%s packets %llu bytes %llu lost %llu dropped %llu delivered %llu\n",
           i == 0 ? "a>b" : "b>a", (unsigned long long)d->packets, (unsigned long long)d->bytes,
           (unsigned long long)d->lost, (unsigned long long)d->dropped,
           (unsigned long long)d->delivered);
  }
  return 0;
}
