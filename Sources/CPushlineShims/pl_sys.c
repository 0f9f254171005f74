#define _GNU_SOURCE
#include "pl_sys.h"
#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

int pl_epoll_create(void) { return epoll_create1(EPOLL_CLOEXEC); }
int pl_epoll_ctl(int epfd, int op, int fd, uint32_t events) {
    struct epoll_event ev;
    memset(&ev, 0, sizeof ev);
    ev.events = events;
    ev.data.fd = fd;
    return epoll_ctl(epfd, op, fd, &ev);
}
int pl_epoll_wait(int epfd, int *fds, uint32_t *evs, int max, int timeout_ms) {
    struct epoll_event events[256];
    if (max > 256) max = 256;
    int n = epoll_wait(epfd, events, max, timeout_ms);
    for (int i = 0; i < n; i++) { fds[i] = events[i].data.fd; evs[i] = events[i].events; }
    return n;
}
int pl_eventfd(void) { return eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC); }
void pl_eventfd_signal(int fd) { uint64_t one = 1; ssize_t r; do { r = write(fd, &one, sizeof one); } while (r < 0 && errno == EINTR); }
void pl_eventfd_drain(int fd) { uint64_t v; ssize_t r; do { r = read(fd, &v, sizeof v); } while (r < 0 && errno == EINTR); }
int pl_accept(int listen_fd) { return accept4(listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC); }
int pl_peer_cred(int fd, int32_t *pid, uint32_t *uid, uint32_t *gid) {
    struct ucred cred;
    socklen_t len = sizeof cred;
    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0) return -1;
    *pid = cred.pid; *uid = cred.uid; *gid = cred.gid;
    return 0;
}
int pl_peer_groups(int fd, uint32_t *gids, int max) {
    socklen_t len = (socklen_t)(max * sizeof(gid_t));
    if (getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, gids, &len) < 0) {
        if (errno == ERANGE) return (int)(len / sizeof(gid_t));
        return -1;
    }
    return (int)(len / sizeof(gid_t));
}
int pl_unix_listen(const char *path, int backlog) {
    struct sockaddr_un addr;
    if (strlen(path) >= sizeof addr.sun_path) { errno = ENAMETOOLONG; return -1; }
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    memset(&addr, 0, sizeof addr);
    addr.sun_family = AF_UNIX;
    strcpy(addr.sun_path, path);
    if (bind(fd, (struct sockaddr *)&addr, sizeof addr) < 0 || listen(fd, backlog) < 0) {
        int e = errno; close(fd); errno = e; return -1;
    }
    return fd;
}
int pl_unix_connect(const char *path) {
    struct sockaddr_un addr;
    if (strlen(path) >= sizeof addr.sun_path) { errno = ENAMETOOLONG; return -1; }
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    memset(&addr, 0, sizeof addr);
    addr.sun_family = AF_UNIX;
    strcpy(addr.sun_path, path);
    int r;
    do { r = connect(fd, (struct sockaddr *)&addr, sizeof addr); } while (r < 0 && errno == EINTR);
    if (r < 0) { int e = errno; close(fd); errno = e; return -1; }
    return fd;
}
int pl_set_nonblocking(int fd) {
    int flags = fcntl(fd, F_GETFL, 0);
    if (flags < 0) return -1;
    return fcntl(fd, F_SETFL, flags | O_NONBLOCK);
}
ssize_t pl_read(int fd, void *buf, size_t len) { ssize_t r; do { r = read(fd, buf, len); } while (r < 0 && errno == EINTR); return r; }
ssize_t pl_write(int fd, const void *buf, size_t len) { ssize_t r; do { r = write(fd, buf, len); } while (r < 0 && errno == EINTR); return r; }

static volatile sig_atomic_t pl_signal_received = 0;
static int pl_signal_wake_fd = -1;
static void pl_on_signal(int sig) {
    int saved = errno;
    pl_signal_received = sig;
    if (pl_signal_wake_fd >= 0) { uint64_t one = 1; ssize_t r = write(pl_signal_wake_fd, &one, sizeof one); (void)r; }
    errno = saved;
}
void pl_install_signal_handlers(int wake_fd) {
    pl_signal_wake_fd = wake_fd;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = pl_on_signal;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
}
static void pl_term_mask(int how) {
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    pthread_sigmask(how, &set, NULL);
}
void pl_block_term_signals(void) { pl_term_mask(SIG_BLOCK); }
void pl_unblock_term_signals(void) { pl_term_mask(SIG_UNBLOCK); }
int pl_pending_signal(void) { return pl_signal_received; }
void pl_ignore_sigpipe(void) { signal(SIGPIPE, SIG_IGN); }
int pl_errno(void) { return errno; }
void pl_set_thread_name(const char *name) { pthread_setname_np(pthread_self(), name); }
long pl_rss_bytes(void) {
    FILE *f = fopen("/proc/self/statm", "r");
    if (!f) return -1;
    long size = 0, rss = 0;
    int n = fscanf(f, "%ld %ld", &size, &rss);
    fclose(f);
    if (n != 2) return -1;
    return rss * sysconf(_SC_PAGESIZE);
}
int pl_malloc_trim(void) { return malloc_trim(0); }
void pl_malloc_arena_max(int n) { mallopt(M_ARENA_MAX, n); }
