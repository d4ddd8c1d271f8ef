// wakefloor measures what one wake-up costs a process on this machine: the CPU a server
// spends per message when it does nothing but a blocking read and a 1-byte reply.
//
// Why C: the picker's CPU per request at low concurrency is mostly the kernel waking it
// for each burst of messages, and the question is how much of that any implementation
// would pay. A C server with no runtime, no poller and no work is that floor. (The rest of
// infergw is Go; this file is a measuring instrument only, built by `make bench-wakefloor`
// and not part of any binary.)
//
// The client sends a 4 KB message over TCP loopback, waits for the reply, then works
// (spins) for GAP microseconds before the next message, as a proxy does its own work
// between the messages of a request. The server's CPU comes from getrusage(RUSAGE_SELF),
// the same clock BenchmarkRequest reads for the picker.
//
// Usage: wakefloor [messages per gap] [gap µs ...]     (default: 20000 messages; gaps 0 20 50 100)
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double now_us(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
}

static double rusage_us(const struct rusage *r) {
  return r->ru_utime.tv_sec * 1e6 + r->ru_utime.tv_usec + r->ru_stime.tv_sec * 1e6 + r->ru_stime.tv_usec;
}

static void die(const char *what) {
  perror(what);
  exit(1);
}

// serve answers every message on c with one byte until the client closes, then prints
// its CPU and voluntary context switches per message.
static void serve(int c, double gap) {
  char buf[8192];
  struct rusage r0, r1;
  long msgs = 0;
  getrusage(RUSAGE_SELF, &r0);
  for (;;) {
    ssize_t k = read(c, buf, sizeof buf);
    if (k <= 0) break;
    if (write(c, buf, 1) != 1) die("server write");
    msgs++;
  }
  getrusage(RUSAGE_SELF, &r1);
  if (msgs == 0) return;
  printf("| %.0f | %ld | %.1f | %.2f |\n", gap, msgs, (rusage_us(&r1) - rusage_us(&r0)) / msgs,
         (double)(r1.ru_nvcsw - r0.ru_nvcsw) / msgs);
}

static void run(int n, double gap) {
  int one = 1;
  int ls = socket(AF_INET, SOCK_STREAM, 0);
  if (ls < 0) die("socket");
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = 0, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t al = sizeof a;
  if (bind(ls, (struct sockaddr *)&a, sizeof a) < 0 || getsockname(ls, (struct sockaddr *)&a, &al) < 0 || listen(ls, 1) < 0)
    die("listen");
  fflush(stdout);
  pid_t pid = fork();
  if (pid < 0) die("fork");
  if (pid == 0) {
    int c = accept(ls, NULL, NULL);
    if (c < 0) die("accept");
    setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    serve(c, gap);
    fflush(stdout);
    _exit(0);
  }
  close(ls);
  int s = socket(AF_INET, SOCK_STREAM, 0);
  if (s < 0 || connect(s, (struct sockaddr *)&a, sizeof a) < 0) die("connect");
  setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  static char msg[4096];
  memset(msg, 'x', sizeof msg);
  char b;
  for (int i = 0; i < n; i++) {
    if (write(s, msg, sizeof msg) != (ssize_t)sizeof msg) die("client write");
    if (read(s, &b, 1) != 1) die("client read");
    double t = now_us();
    while (now_us() - t < gap) {
    }
  }
  close(s);
  waitpid(pid, NULL, 0);
}

int main(int argc, char **argv) {
  int n = argc > 1 ? atoi(argv[1]) : 20000;
  if (n <= 0 || n > 10000000) {
    fprintf(stderr, "usage: wakefloor [messages 1..10000000] [gap µs ...]\n");
    return 2;
  }
  printf("| client gap (µs) | messages | server CPU µs per message | voluntary switches per message |\n");
  printf("|---:|---:|---:|---:|\n");
  if (argc > 2) {
    for (int i = 2; i < argc; i++) run(n, atof(argv[i]));
  } else {
    double gaps[] = {0, 20, 50, 100};
    for (int i = 0; i < 4; i++) run(n, gaps[i]);
  }
  return 0;
}
