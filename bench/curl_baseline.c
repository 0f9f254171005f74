// Raw libcurl multi baseline (bench/transport_bench.sh): T threads, each with its own multi
// handle and one connection, N POSTs in all with up to W in flight per thread, easy handles
// reused, no Swift. Shows what libcurl itself costs here, so the transport's own overhead can be
// told apart from libcurl's, and what the best libcurl-based client could reach on this machine.
//   cc -O2 -pthread -o curl_baseline bench/curl_baseline.c -lcurl
//   ./curl_baseline https://127.0.0.1:18443/ /tmp/pushline-sink.X/cert.pem 100000 1000 [threads] [cork]
//                   [body-file ['header: value'...]]
// With a body file and headers it sends exactly the request a provider bench sends (the APNs
// and FCM benches use it as the libcurl ceiling beside h2load); otherwise a fixed APNs body with
// only content-type.
// cork=1 corks each connection (TCP_CORK) while libcurl writes a pass and uncorks it before
// polling: libcurl 7.88 sends every HTTP/2 frame with its own send(). (The daemon does not cork:
// it made a libcurl stall after GOAWAY frequent, see README.)
#include <curl/curl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>

static const char *url, *ca;
static int per_thread, window, cork;
static const char *body = "{\"aps\":{\"alert\":{\"title\":\"Hello\",\"body\":\"A benchmark notification\"}}}";
static char **extra_headers;
static int n_extra_headers;

static size_t wcb(char *p, size_t s, size_t n, void *u) { (void)p; (void)u; return s * n; }
static double now(void) { struct timespec ts; clock_gettime(CLOCK_MONOTONIC, &ts); return ts.tv_sec + ts.tv_nsec / 1e9; }

struct worker { int fd; int ok; int early; };

static int sockcb(void *u, curl_socket_t fd, curlsocktype p) { (void)p; ((struct worker *)u)->fd = fd; return CURL_SOCKOPT_OK; }
static void set_cork(struct worker *w, int on) { if (cork && w->fd >= 0) setsockopt(w->fd, IPPROTO_TCP, TCP_CORK, &on, sizeof on); }

static void *run(void *arg) {
    struct worker *w = arg;
    w->fd = -1;
    CURLM *m = curl_multi_init();
    curl_multi_setopt(m, CURLMOPT_PIPELINING, CURLPIPE_MULTIPLEX);
    curl_multi_setopt(m, CURLMOPT_MAX_HOST_CONNECTIONS, 1L);
    curl_multi_setopt(m, CURLMOPT_MAX_CONCURRENT_STREAMS, 1000L);
    struct curl_slist *h = NULL;
    if (n_extra_headers == 0) h = curl_slist_append(h, "content-type: application/json");
    for (int i = 0; i < n_extra_headers; i++) h = curl_slist_append(h, extra_headers[i]);
    CURL **pool = calloc(window, sizeof(CURL *));
    int npool = 0, started = 0, done = 0, running = 0;
    while (done < per_thread) {
        set_cork(w, 1);
        while (started < per_thread && started - done < window) {
            CURL *e = npool ? pool[--npool] : curl_easy_init();
            char *errbuf = NULL;
            curl_easy_getinfo(e, CURLINFO_PRIVATE, &errbuf);
            if (!errbuf) {
                errbuf = calloc(1, CURL_ERROR_SIZE);
                curl_easy_setopt(e, CURLOPT_PRIVATE, errbuf);
                curl_easy_setopt(e, CURLOPT_ERRORBUFFER, errbuf);
            }
            errbuf[0] = 0;
            curl_easy_setopt(e, CURLOPT_URL, url);
            curl_easy_setopt(e, CURLOPT_CAINFO, ca);
            curl_easy_setopt(e, CURLOPT_HTTP_VERSION, CURL_HTTP_VERSION_2TLS);
            curl_easy_setopt(e, CURLOPT_PIPEWAIT, 1L);
            curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
            curl_easy_setopt(e, CURLOPT_POSTFIELDS, body);
            curl_easy_setopt(e, CURLOPT_HTTPHEADER, h);
            curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, wcb);
            curl_easy_setopt(e, CURLOPT_SOCKOPTFUNCTION, sockcb);
            curl_easy_setopt(e, CURLOPT_SOCKOPTDATA, w);
            curl_multi_add_handle(m, e);
            started++;
        }
        curl_multi_perform(m, &running);
        CURLMsg *msg;
        int left;
        while ((msg = curl_multi_info_read(m, &left))) {
            if (msg->msg == CURLMSG_DONE) {
                CURL *e = msg->easy_handle;
                if (msg->data.result == CURLE_OK) w->ok++;
                else if (msg->data.result == CURLE_HTTP2_STREAM) {
                    // The daemon's rule (Transfer.completedBeforeUpload): a complete answer the
                    // server followed with RST_STREAM(NO_ERROR) before the body went out is a
                    // success; libcurl 7.88 then fails with no error text.
                    char *errbuf = NULL;
                    long code = 0;
                    curl_easy_getinfo(e, CURLINFO_PRIVATE, &errbuf);
                    curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &code);
                    if (errbuf && !errbuf[0] && code >= 200) { w->ok++; w->early++; }
                }
                curl_multi_remove_handle(m, e);
                pool[npool++] = e;
                done++;
            }
        }
        set_cork(w, 0);
        // Wait only while something is in flight: after the last answer the loop ends (a poll here
        // added up to 100 ms to every run).
        if (done < per_thread && (started - done >= window || started == per_thread)) curl_multi_poll(m, NULL, 0, 100, NULL);
    }
    return NULL;
}

int main(int argc, char **argv) {
    if (argc < 5) { fprintf(stderr, "usage: %s url ca total window [threads] [cork] [body-file [header...]]\n", argv[0]); return 2; }
    url = argv[1]; ca = argv[2];
    int total = atoi(argv[3]), threads = argc > 5 ? atoi(argv[5]) : 1;
    window = atoi(argv[4]);
    cork = argc > 6 ? atoi(argv[6]) : 0;
    if (argc > 7) {
        FILE *f = fopen(argv[7], "rb");
        if (!f) { perror(argv[7]); return 2; }
        static char buf[65536];
        size_t len = fread(buf, 1, sizeof buf - 1, f);
        fclose(f);
        buf[len] = 0;
        body = buf;
        extra_headers = argv + 8;
        n_extra_headers = argc - 8;
    }
    if (threads < 1) threads = 1;
    per_thread = total / threads;
    curl_global_init(CURL_GLOBAL_ALL);
    pthread_t tid[64];
    struct worker w[64];
    memset(w, 0, sizeof w);
    double t0 = now();
    for (int i = 0; i < threads && i < 64; i++) pthread_create(&tid[i], NULL, run, &w[i]);
    int ok = 0, early = 0;
    for (int i = 0; i < threads && i < 64; i++) { pthread_join(tid[i], NULL); ok += w[i].ok; early += w[i].early; }
    double dt = now() - t0;
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    double cpu = ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
    int n = per_thread * threads;
    printf("raw libcurl (%d thread%s, cork %s): %d ok of %d in %.2f s: %.0f req/s, %.1f us CPU/request"
           " (%d answered before the body, then RST_STREAM(NO_ERROR))\n", threads,
           threads == 1 ? "" : "s", cork ? "on" : "off", ok, n, dt, n / dt, cpu / n * 1e6, early);
    return 0;
}
