#ifndef PL_CURL_H
#define PL_CURL_H
#include <curl/curl.h>
// curl_easy_setopt/getinfo and curl_multi_setopt are variadic: Swift cannot call
// them. One typed wrapper per argument type. (Owned by the transport.)
CURLcode pl_curl_easy_setopt_long(CURL *h, CURLoption opt, long v);
CURLcode pl_curl_easy_setopt_string(CURL *h, CURLoption opt, const char *v);
CURLcode pl_curl_easy_setopt_pointer(CURL *h, CURLoption opt, void *v);
CURLcode pl_curl_easy_setopt_off_t(CURL *h, CURLoption opt, curl_off_t v);
CURLcode pl_curl_easy_setopt_slist(CURL *h, CURLoption opt, struct curl_slist *v);
typedef size_t (*pl_curl_data_cb)(char *ptr, size_t size, size_t nmemb, void *userdata);
CURLcode pl_curl_easy_setopt_data_cb(CURL *h, CURLoption opt, pl_curl_data_cb cb);
CURLcode pl_curl_easy_getinfo_long(CURL *h, CURLINFO info, long *out);
CURLcode pl_curl_easy_getinfo_pointer(CURL *h, CURLINFO info, void **out);
CURLcode pl_curl_easy_getinfo_double(CURL *h, CURLINFO info, double *out);
CURLMcode pl_curl_multi_setopt_long(CURLM *m, CURLMoption opt, long v);

#include <stdint.h>
/// What a multi handle driven by curl_multi_socket_action reports (see pl_curl_multi_use_epoll).
/// Owned by the transport's `CurlMulti`, which frees it after curl_multi_cleanup (cleanup may
/// still report sockets being removed).
struct pl_curl_events {
    /// The epoll instance libcurl's sockets are registered in (data = the fd).
    int epfd;
    /// errno of the first epoll_ctl that failed unexpectedly (0: none); the callback then
    /// returns -1, which fails the curl_multi_socket_action call with CURLM_ABORTED_BY_CALLBACK.
    int ctl_errno;
    /// CLOCK_MONOTONIC nanoseconds at which libcurl wants curl_multi_socket_action(CURL_SOCKET_TIMEOUT),
    /// or UINT64_MAX for no timer (CURLMOPT_TIMERFUNCTION, converted to an absolute time when set).
    uint64_t timer_ns;
};
/// Installs CURLMOPT_SOCKETFUNCTION/TIMERFUNCTION (function pointers: curl_multi_setopt is
/// variadic) that keep `ev->epfd` in step with the sockets libcurl wants watched and record the
/// timer in `ev->timer_ns`. C callbacks, so no Swift runs inside libcurl for them.
CURLMcode pl_curl_multi_use_epoll(CURLM *m, struct pl_curl_events *ev);
#endif
