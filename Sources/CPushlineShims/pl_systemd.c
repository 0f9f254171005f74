#define _GNU_SOURCE
#include "pl_systemd.h"
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stddef.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

int pl_sd_notify(const char *path, const char *msg) {
    struct sockaddr_un addr;
    size_t plen = strlen(path);
    if (plen == 0 || plen >= sizeof addr.sun_path) return -EINVAL;
    if (path[0] != '/' && path[0] != '@') return -EAFNOSUPPORT;
    memset(&addr, 0, sizeof addr);
    addr.sun_family = AF_UNIX;
    memcpy(addr.sun_path, path, plen);
    if (path[0] == '@') addr.sun_path[0] = '\0';
    socklen_t alen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + plen + (path[0] == '@' ? 0 : 1));
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return -errno;
    ssize_t r;
    do { r = sendto(fd, msg, strlen(msg), MSG_NOSIGNAL, (struct sockaddr *)&addr, alen); } while (r < 0 && errno == EINTR);
    int e = r < 0 ? errno : 0;
    close(fd);
    return -e;
}

int pl_listen_fds_start(void) { return 3; }

static int pl_listener_family(int fd) {
    int type = 0, listening = 0;
    socklen_t l = sizeof type;
    if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &l) < 0) return -errno;
    l = sizeof listening;
    if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &l) < 0) return -errno;
    if (type != SOCK_STREAM || !listening) return 0;
    struct sockaddr_storage ss;
    l = sizeof ss;
    if (getsockname(fd, (struct sockaddr *)&ss, &l) < 0) return -errno;
    return ss.ss_family;
}

int pl_is_unix_stream_listener(int fd) {
    int f = pl_listener_family(fd);
    return f < 0 ? f : (f == AF_UNIX);
}

int pl_is_inet_stream_listener(int fd) {
    int f = pl_listener_family(fd);
    return f < 0 ? 0 : (f == AF_INET || f == AF_INET6);
}

int pl_adopt_fd(int fd) {
    int flags = fcntl(fd, F_GETFD);
    if (flags < 0 || fcntl(fd, F_SETFD, flags | FD_CLOEXEC) < 0) return -errno;
    flags = fcntl(fd, F_GETFL);
    if (flags < 0 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0) return -errno;
    return 0;
}

int pl_unix_socket_path(int fd, char *buf, int len) {
    struct sockaddr_un addr;
    socklen_t l = sizeof addr;
    memset(&addr, 0, sizeof addr);
    if (getsockname(fd, (struct sockaddr *)&addr, &l) < 0) return -errno;
    if (addr.sun_family != AF_UNIX || len < 2) return -EINVAL;
    size_t n = l > offsetof(struct sockaddr_un, sun_path) ? l - offsetof(struct sockaddr_un, sun_path) : 0;
    if (n > 0 && addr.sun_path[0] == '\0') {
        addr.sun_path[0] = '@';
    } else {
        n = strnlen(addr.sun_path, n);
    }
    if ((int)n >= len) n = (size_t)len - 1;
    memcpy(buf, addr.sun_path, n);
    buf[n] = '\0';
    return (int)n;
}

static volatile sig_atomic_t pl_hup_received = 0;
static int pl_hup_wake_fd = -1;
static void pl_on_hup(int sig) {
    (void)sig;
    int saved = errno;
    pl_hup_received = 1;
    if (pl_hup_wake_fd >= 0) { uint64_t one = 1; ssize_t r = write(pl_hup_wake_fd, &one, sizeof one); (void)r; }
    errno = saved;
}
void pl_install_hup_handler(int wake_fd) {
    pl_hup_wake_fd = wake_fd;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = pl_on_hup;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;
    sigaction(SIGHUP, &sa, NULL);
}
int pl_take_hup(void) {
    if (!pl_hup_received) return 0;
    pl_hup_received = 0;
    return 1;
}
