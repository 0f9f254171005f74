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
CURLcode pl_curl_easy_getinfo_off_t(CURL *h, CURLINFO info, curl_off_t *out);
CURLMcode pl_curl_multi_setopt_long(CURLM *m, CURLMoption opt, long v);
/// CURLOPT_OPENSOCKETFUNCTION / CURLOPT_CLOSESOCKETFUNCTION (function pointers; the transport's
/// count of open provider connections per origin).
CURLcode pl_curl_easy_setopt_opensocket_cb(CURL *h, curl_opensocket_callback cb);
CURLcode pl_curl_easy_setopt_closesocket_cb(CURL *h, curl_closesocket_callback cb);
/// socket(2) for libcurl's address (what libcurl does without an open-socket callback):
/// the fd, or CURL_SOCKET_BAD with errno set.
curl_socket_t pl_curl_open_socket(const struct curl_sockaddr *address);
#endif
