#ifndef PL_NET_H
#define PL_NET_H
// TCP listening for the metrics endpoint (`metrics_listen`): getaddrinfo and sockaddr
// handling are awkward from Swift.

/// Creates, binds and listens on a TCP socket at the numeric address `host` (IPv4 or
/// IPv6 literal) and `port` (blocking, close-on-exec, SO_REUSEADDR). Returns the fd, or
/// -errno (-EINVAL for a host that is not a numeric address).
int pl_tcp_listen(const char *host, int port, int backlog);

/// The local port a bound socket listens on, or -errno.
int pl_local_port(int fd);

/// Sets SO_RCVTIMEO and SO_SNDTIMEO on a blocking socket to `ms` milliseconds.
int pl_set_socket_timeouts(int fd, int ms);

/// accept(2) on a blocking listening socket (close-on-exec), retried on EINTR; -1 with errno.
int pl_accept_blocking(int listen_fd);

/// shutdown(fd, SHUT_RDWR): wakes a thread blocked in accept on `fd`.
int pl_shutdown(int fd);
/// Clears O_NONBLOCK (the metrics thread accepts and reads blocking, with timeouts).
int pl_set_blocking(int fd);
#endif
