#include "pl_curl.h"
CURLcode pl_curl_easy_setopt_long(CURL *h, CURLoption opt, long v) { return curl_easy_setopt(h, opt, v); }
CURLcode pl_curl_easy_setopt_string(CURL *h, CURLoption opt, const char *v) { return curl_easy_setopt(h, opt, v); }
CURLcode pl_curl_easy_setopt_pointer(CURL *h, CURLoption opt, void *v) { return curl_easy_setopt(h, opt, v); }
CURLcode pl_curl_easy_setopt_off_t(CURL *h, CURLoption opt, curl_off_t v) { return curl_easy_setopt(h, opt, v); }
CURLcode pl_curl_easy_setopt_slist(CURL *h, CURLoption opt, struct curl_slist *v) { return curl_easy_setopt(h, opt, v); }
CURLcode pl_curl_easy_setopt_data_cb(CURL *h, CURLoption opt, pl_curl_data_cb cb) { return curl_easy_setopt(h, opt, cb); }
CURLcode pl_curl_easy_getinfo_long(CURL *h, CURLINFO info, long *out) { return curl_easy_getinfo(h, info, out); }
CURLcode pl_curl_easy_getinfo_pointer(CURL *h, CURLINFO info, void **out) { return curl_easy_getinfo(h, info, out); }
CURLcode pl_curl_easy_getinfo_double(CURL *h, CURLINFO info, double *out) { return curl_easy_getinfo(h, info, out); }
CURLMcode pl_curl_multi_setopt_long(CURLM *m, CURLMoption opt, long v) { return curl_multi_setopt(m, opt, v); }

#include <errno.h>
#include <sys/epoll.h>
#include <time.h>

/// CURLMOPT_SOCKETFUNCTION: mirrors libcurl's wishes for socket `s` into the epoll set.
/// MOD first (the common case: a watched socket changes direction), ADD when the socket is not
/// in the set yet (ENOENT). A failed DEL is harmless: a socket libcurl closed already left the set.
static int pl_curl_socket_cb(CURL *easy, curl_socket_t s, int what, void *userp, void *socketp) {
    (void)easy; (void)socketp;
    struct pl_curl_events *ev = userp;
    if (what == CURL_POLL_REMOVE) {
        (void)epoll_ctl(ev->epfd, EPOLL_CTL_DEL, s, NULL);
        return 0;
    }
    struct epoll_event e;
    e.events = 0;
    if (what & CURL_POLL_IN) e.events |= EPOLLIN;
    if (what & CURL_POLL_OUT) e.events |= EPOLLOUT;
    e.data.u64 = 0;
    e.data.fd = s;
    if (epoll_ctl(ev->epfd, EPOLL_CTL_MOD, s, &e) == 0) return 0;
    if (errno == ENOENT && epoll_ctl(ev->epfd, EPOLL_CTL_ADD, s, &e) == 0) return 0;
    if (ev->ctl_errno == 0) ev->ctl_errno = errno;
    return -1;
}

/// CURLMOPT_TIMERFUNCTION: records when libcurl wants CURL_SOCKET_TIMEOUT (-1: no timer).
static int pl_curl_timer_cb(CURLM *multi, long timeout_ms, void *userp) {
    (void)multi;
    struct pl_curl_events *ev = userp;
    if (timeout_ms < 0) {
        ev->timer_ns = UINT64_MAX;
        return 0;
    }
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    // libcurl 7.88 rounds the time left down to whole milliseconds (multi_timeout), so its timer
    // may fall up to 1 ms after now + timeout_ms: a call at that time would find nothing
    // expired, and libcurl reports no new timer for the same expiry (the loop would spin until
    // then). A non-zero timer is therefore taken 1 ms later; 0 means at once.
    uint64_t ms = timeout_ms > 0 ? (uint64_t)timeout_ms + 1 : 0;
    ev->timer_ns = (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec + ms * 1000000u;
    return 0;
}

CURLMcode pl_curl_multi_use_epoll(CURLM *m, struct pl_curl_events *ev) {
    CURLMcode rc = curl_multi_setopt(m, CURLMOPT_SOCKETFUNCTION, pl_curl_socket_cb);
    if (rc == CURLM_OK) rc = curl_multi_setopt(m, CURLMOPT_SOCKETDATA, ev);
    if (rc == CURLM_OK) rc = curl_multi_setopt(m, CURLMOPT_TIMERFUNCTION, pl_curl_timer_cb);
    if (rc == CURLM_OK) rc = curl_multi_setopt(m, CURLMOPT_TIMERDATA, ev);
    return rc;
}
