// Raw libcurl multi baseline (bench/transport_bench.sh): one thread, one connection, N POSTs
// with up to W in flight, easy handles reused, no Swift. Shows what libcurl itself costs here,
// so the transport's own overhead can be told apart from libcurl's.
//   cc -O2 -o curl_baseline bench/curl_baseline.c -lcurl
//   ./curl_baseline https://127.0.0.1:18443/ /tmp/pushline-sink.X/cert.pem 100000 1000
#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/resource.h>
static size_t wcb(char *p, size_t s, size_t n, void *u) { (void)p; (void)u; return s * n; }
static const char *body = "{\"aps\":{\"alert\":{\"title\":\"Hello\",\"body\":\"A benchmark notification\"}}}";
static double now(void) { struct timespec ts; clock_gettime(CLOCK_MONOTONIC, &ts); return ts.tv_sec + ts.tv_nsec / 1e9; }
int main(int argc, char **argv) {
    const char *url = argv[1], *ca = argv[2]; int total = atoi(argv[3]), window = atoi(argv[4]);
    curl_global_init(CURL_GLOBAL_ALL);
    CURLM *m = curl_multi_init();
    curl_multi_setopt(m, CURLMOPT_PIPELINING, CURLPIPE_MULTIPLEX);
    curl_multi_setopt(m, CURLMOPT_MAX_HOST_CONNECTIONS, 1L);
    curl_multi_setopt(m, CURLMOPT_MAX_CONCURRENT_STREAMS, 1000L);
    struct curl_slist *h = curl_slist_append(NULL, "content-type: application/json");
    CURL **pool = calloc(window, sizeof(CURL *)); int npool = 0;
    int started = 0, done = 0, ok = 0, running = 0;
    double t0 = now();
    while (done < total) {
        while (started < total && started - done < window) {
            CURL *e = npool ? pool[--npool] : curl_easy_init();
            curl_easy_setopt(e, CURLOPT_URL, url);
            curl_easy_setopt(e, CURLOPT_CAINFO, ca);
            curl_easy_setopt(e, CURLOPT_HTTP_VERSION, CURL_HTTP_VERSION_2TLS);
            curl_easy_setopt(e, CURLOPT_PIPEWAIT, 1L);
            curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
            curl_easy_setopt(e, CURLOPT_POSTFIELDS, body);
            curl_easy_setopt(e, CURLOPT_HTTPHEADER, h);
            curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, wcb);
            curl_multi_add_handle(m, e); started++;
        }
        curl_multi_perform(m, &running);
        CURLMsg *msg; int left;
        while ((msg = curl_multi_info_read(m, &left))) {
            if (msg->msg == CURLMSG_DONE) {
                CURL *e = msg->easy_handle; if (msg->data.result == CURLE_OK) ok++;
                curl_multi_remove_handle(m, e); pool[npool++] = e; done++;
            }
        }
        if (started - done >= window || started == total) curl_multi_poll(m, NULL, 0, 100, NULL);
    }
    double dt = now() - t0; struct rusage ru; getrusage(RUSAGE_SELF, &ru);
    double cpu = ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
    printf("raw libcurl: %d ok of %d in %.2f s: %.0f req/s, %.1f us CPU/request\n", ok, total, dt, total / dt, cpu / total * 1e6);
    return 0;
}
