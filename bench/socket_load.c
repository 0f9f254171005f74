// A light load generator for the daemon's Unix socket (bench/latency_bench.py): C clients that
// cost the shared cores little, so a rate measures the daemon and the sink rather than the bench.
// One thread, epoll, C connections each with one request in flight (as web workers have): the
// next request goes out as soon as the previous answer's newline arrived.
//   cc -O2 -o socket_load bench/socket_load.c
//   ./socket_load SOCKET CLIENTS TOTAL REQUESTS_FILE
// REQUESTS_FILE holds one request per line; the k-th request sent is line k modulo their count.
// An answer counts as failed unless it has "ok":true and each "status" in it is "sent" (as
// latency_bench.py's failures_of counts them).
// Prints one line:
//   socket_load: C clients, N answers in T s: R/s, F failed, P us client CPU per request
// and the first failed answer (cut at 300 bytes) if any. Exit status 1 on a connection error.
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

struct client {
    int fd;
    char *buf;
    size_t len, cap;
};

static char **lines;
static size_t *line_len;
static size_t n_lines;

static size_t count(const char *s, const char *what) {
    size_t n = 0, k = strlen(what);
    for (const char *p = strstr(s, what); p; p = strstr(p + k, what)) n++;
    return n;
}

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static double cpu_now(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
}

static int send_all(int fd, const char *p, size_t n) {
    while (n > 0) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

static void read_requests(const char *path) {
    FILE *f = fopen(path, "r");
    if (!f) { perror(path); exit(2); }
    size_t cap = 0;
    char *line = NULL;
    ssize_t n;
    size_t alloc = 16;
    lines = malloc(alloc * sizeof *lines);
    line_len = malloc(alloc * sizeof *line_len);
    while ((n = getline(&line, &cap, f)) > 0) {
        if (line[n - 1] != '\n') { line = realloc(line, (size_t)n + 2); line[n++] = '\n'; }
        if (n_lines == alloc) {
            alloc *= 2;
            lines = realloc(lines, alloc * sizeof *lines);
            line_len = realloc(line_len, alloc * sizeof *line_len);
        }
        lines[n_lines] = malloc((size_t)n);
        memcpy(lines[n_lines], line, (size_t)n);
        line_len[n_lines++] = (size_t)n;
    }
    free(line);
    fclose(f);
    if (n_lines == 0) { fprintf(stderr, "%s: no requests\n", path); exit(2); }
}

int main(int argc, char **argv) {
    if (argc != 5) {
        fprintf(stderr, "usage: %s socket clients total requests-file\n", argv[0]);
        return 2;
    }
    const char *path = argv[1];
    int clients = atoi(argv[2]);
    long total = atol(argv[3]);
    if (clients < 1 || total < 1 || strlen(path) >= sizeof(((struct sockaddr_un *)0)->sun_path)) {
        fprintf(stderr, "bad arguments\n");
        return 2;
    }
    read_requests(argv[4]);
    if (clients > total) clients = (int)total;
    int ep = epoll_create1(0);
    if (ep < 0) { perror("epoll_create1"); return 1; }
    struct client *cs = calloc((size_t)clients, sizeof *cs);
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    strcpy(addr.sun_path, path);
    for (int i = 0; i < clients; i++) {
        cs[i].fd = socket(AF_UNIX, SOCK_STREAM, 0);
        if (cs[i].fd < 0 || connect(cs[i].fd, (struct sockaddr *)&addr, sizeof addr) < 0) { perror("connect"); return 1; }
        cs[i].cap = 1 << 16;
        cs[i].buf = malloc(cs[i].cap);
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &cs[i]};
        if (epoll_ctl(ep, EPOLL_CTL_ADD, cs[i].fd, &ev) < 0) { perror("epoll_ctl"); return 1; }
    }
    long sent = 0, answered = 0, failed = 0;
    char first_failure[301] = "";
    double t0 = now(), c0 = cpu_now();
    for (int i = 0; i < clients; i++) {
        if (send_all(cs[i].fd, lines[sent % n_lines], line_len[sent % n_lines]) < 0) { perror("send"); return 1; }
        sent++;
    }
    struct epoll_event evs[64];
    while (answered < total) {
        int n = epoll_wait(ep, evs, 64, 60000);
        if (n < 0) {
            if (errno == EINTR) continue;
            perror("epoll_wait");
            return 1;
        }
        if (n == 0) { fprintf(stderr, "socket_load: no answer for 60 s (%ld of %ld answered)\n", answered, total); return 1; }
        for (int k = 0; k < n; k++) {
            struct client *c = evs[k].data.ptr;
            if (c->cap - c->len < 4096) {
                c->cap *= 2;
                c->buf = realloc(c->buf, c->cap);
            }
            ssize_t r = recv(c->fd, c->buf + c->len, c->cap - c->len, 0);
            if (r < 0 && errno == EINTR) continue;
            if (r <= 0) { fprintf(stderr, "socket_load: the daemon closed a connection\n"); return 1; }
            c->len += (size_t)r;
            char *start = c->buf, *nl;
            while ((nl = memchr(start, '\n', c->len - (size_t)(start - c->buf))) != NULL) {
                *nl = 0;
                answered++;
                if (!strstr(start, "\"ok\":true") || count(start, "\"status\":\"") != count(start, "\"status\":\"sent\"")) {
                    if (failed++ == 0) snprintf(first_failure, sizeof first_failure, "%s", start);
                }
                if (sent < total) {
                    if (send_all(c->fd, lines[sent % n_lines], line_len[sent % n_lines]) < 0) { perror("send"); return 1; }
                    sent++;
                }
                start = nl + 1;
            }
            size_t rest = c->len - (size_t)(start - c->buf);
            memmove(c->buf, start, rest);
            c->len = rest;
        }
    }
    double dt = now() - t0, cpu = cpu_now() - c0;
    printf("socket_load: %d clients, %ld answers in %.3f s: %.0f/s, %ld failed, %.1f us client CPU per request\n",
           clients, answered, dt, answered / dt, failed, cpu / answered * 1e6);
    if (failed) printf("first failed answer: %s\n", first_failure);
    for (int i = 0; i < clients; i++) close(cs[i].fd);
    return 0;
}
