#ifndef PL_SYSTEMD_H
#define PL_SYSTEMD_H
// The two systemd protocols the daemon speaks itself (no libsystemd): sd_notify(3) and
// socket activation (sd_listen_fds(3)). sockaddr_un and the abstract-namespace '@'
// spelling are awkward from Swift, so the socket calls live here.

/// Sends `msg` (e.g. "READY=1\nSTATUS=serving") as one datagram to the AF_UNIX socket
/// named by `path` ($NOTIFY_SOCKET: a file path, or "@name" for the abstract namespace).
/// Returns 0, or -errno.
int pl_sd_notify(const char *path, const char *msg);

/// The first socket-activation descriptor (SD_LISTEN_FDS_START).
int pl_listen_fds_start(void);

/// 1 if `fd` is a listening AF_UNIX stream socket, 0 if it is something else, -errno on error.
int pl_is_unix_stream_listener(int fd);

/// 1 if `fd` is a listening AF_INET/AF_INET6 stream socket, 0 otherwise.
int pl_is_inet_stream_listener(int fd);

/// Marks `fd` close-on-exec and non-blocking (activated descriptors arrive without either).
/// Returns 0 or -errno.
int pl_adopt_fd(int fd);

/// Writes the Unix socket path `fd` is bound to into `buf` (NUL-terminated); returns its
/// length, or -errno. Abstract addresses come back as "@name".
int pl_unix_socket_path(int fd, char *buf, int len);

/// Installs a SIGHUP handler (systemctl reload) that records the signal and writes to
/// `wake_fd` (the server's eventfd). Separate from the SIGTERM/SIGINT handlers in pl_sys.
void pl_install_hup_handler(int wake_fd);
/// 1 if SIGHUP arrived since the last call (and clears it), else 0.
int pl_take_hup(void);
#endif
