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
CURLcode pl_curl_easy_getinfo_off_t(CURL *h, CURLINFO info, curl_off_t *out) { return curl_easy_getinfo(h, info, out); }
CURLMcode pl_curl_multi_setopt_long(CURLM *m, CURLMoption opt, long v) { return curl_multi_setopt(m, opt, v); }
#include <sys/socket.h>
CURLcode pl_curl_easy_setopt_opensocket_cb(CURL *h, curl_opensocket_callback cb) { return curl_easy_setopt(h, CURLOPT_OPENSOCKETFUNCTION, cb); }
CURLcode pl_curl_easy_setopt_closesocket_cb(CURL *h, curl_closesocket_callback cb) { return curl_easy_setopt(h, CURLOPT_CLOSESOCKETFUNCTION, cb); }
curl_socket_t pl_curl_open_socket(const struct curl_sockaddr *address) {
    int fd = socket(address->family, address->socktype, address->protocol);
    return fd < 0 ? CURL_SOCKET_BAD : fd;
}
