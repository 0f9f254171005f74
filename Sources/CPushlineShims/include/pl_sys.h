#ifndef PL_SYS_H
#define PL_SYS_H
#include <stdint.h>
#include <sys/types.h>
// Swift's Glibc module does not include <sys/epoll.h>; including it here imports its
// constants (EPOLLIN, EPOLLOUT, EPOLLRDHUP, EPOLLHUP, EPOLLERR as `EPOLL_EVENTS` values,
// EPOLL_CTL_ADD/MOD/DEL as Int32) from the header instead of hard-coding them.
#include <sys/epoll.h>

/// epoll_* and eventfd are not in Swift's Glibc module (and `struct epoll_event` is packed
/// on x86-64, which Swift cannot lay out); these are thin pass-throughs. None retries EINTR:
/// the Swift `syscall(blocking:where:)` wrapper does, and reads errno at once.
int pl_epoll_create(void);
/// epoll_ctl with `events` and data = fd. `op` is EPOLL_CTL_ADD, EPOLL_CTL_MOD or EPOLL_CTL_DEL.
/// Returns 0 or -1 with errno set.
int pl_epoll_ctl(int epfd, int op, int fd, uint32_t events);
/// epoll_wait; fills `fds`/`evs` (parallel arrays of `max` entries, at most 256).
/// Returns the count or -1 with errno set (EINTR included).
int pl_epoll_wait(int epfd, int *fds, uint32_t *evs, int max, int timeout_ms);

/// A non-blocking, close-on-exec eventfd.
int pl_eventfd(void);
/// Adds 1 to the eventfd counter (wakes an epoll loop). Async-signal-safe.
void pl_eventfd_signal(int fd);
/// Reads (resets) the eventfd counter.
void pl_eventfd_drain(int fd);

/// accept4 needs _GNU_SOURCE: accepts non-blocking, close-on-exec. Returns the fd or -1
/// with errno set (EINTR and EAGAIN included: the caller's syscall wrapper handles them).
int pl_accept(int listen_fd);
/// The peer's credentials of a connected Unix socket (getsockopt SO_PEERCRED; `struct ucred`
/// needs _GNU_SOURCE, which Swift's Glibc module does not define). Returns 0 or -1 with errno set.
int pl_peer_cred(int fd, int32_t *pid, uint32_t *uid, uint32_t *gid);
/// The peer's supplementary groups (getsockopt SO_PEERGROUPS, Linux 4.13+), written to `gids`
/// (room for `max`). Returns how many the peer has (more than `max` means call again with
/// a larger array; only then is `gids` not filled), or -1 with errno set.
int pl_peer_groups(int fd, uint32_t *gids, int max);
/// Creates, binds and listens on a Unix stream socket at `path` (non-blocking, cloexec).
/// Returns the fd or -1 with errno set.
int pl_unix_listen(const char *path, int backlog);
/// Connects a blocking Unix stream socket to `path`; returns fd or -1 with errno set.
int pl_unix_connect(const char *path);
/// Sets O_NONBLOCK.
int pl_set_nonblocking(int fd);
/// read(2)/write(2) retried on EINTR in one place.
ssize_t pl_read(int fd, void *buf, size_t len);
ssize_t pl_write(int fd, const void *buf, size_t len);

/// Installs SIGTERM/SIGINT handlers that write to `wake_fd` (an eventfd) and
/// record the signal; ignores SIGPIPE. A signal handler cannot be a Swift closure
/// that captures state, so the state lives here.
void pl_install_signal_handlers(int wake_fd);
/// Blocks SIGTERM/SIGINT in the calling thread (and the threads it creates later), so a
/// signal during start-up waits for the handlers instead of killing the process.
void pl_block_term_signals(void);
/// Unblocks SIGTERM/SIGINT in the calling thread; a pending one is delivered now.
void pl_unblock_term_signals(void);
/// The last termination signal received, or 0.
int pl_pending_signal(void);
/// Ignores SIGPIPE (for clients and tools).
void pl_ignore_sigpipe(void);
/// The errno of the calling thread (errno is a macro).
int pl_errno(void);
/// Names the calling thread (pthread_setname_np needs _GNU_SOURCE).
void pl_set_thread_name(const char *name);
/// Resident set size in bytes of this process (from /proc/self/statm), or -1.
long pl_rss_bytes(void);
/// malloc_trim(3) (from <malloc.h>, which Swift's Glibc module does not include): returns
/// freed heap memory to the kernel after a burst so idle RSS goes back down. 1 if memory was released.
int pl_malloc_trim(void);
/// mallopt(M_ARENA_MAX, n): caps glibc's per-thread malloc arenas, which otherwise keep
/// burst memory of every Swift concurrency thread apart (fragmentation, RSS).
void pl_malloc_arena_max(int n);
#endif
