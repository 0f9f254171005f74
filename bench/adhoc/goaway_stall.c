// Plain libcurl probe of the "stall after GOAWAY" (issue 11; the transport restarts transfers
// parked waiting for a connection after 2 s, EventLoop.watchActive): one multi handle, one
// connection per host (CURLMOPT_MAX_HOST_CONNECTIONS 1, as the daemon's loops), up to W POSTs in
// flight, against Tests/fakes/h2sink.py --goaway-after N [--goaway-linger]. No Swift, no restart:
// a stall shows as transfers still attached with nothing finished for 2 s. The probe then prints,
// per stalled transfer, whether libcurl ever gave it a connection (CURLINFO_PRETRANSFER_TIME) and
// the last libcurl info lines of that transfer (CURLOPT_DEBUGFUNCTION), plus the multi handle's
// view (running count), and lets it run on to show whether anything ever moves it (each transfer
// has CURLOPT_TIMEOUT_MS; a transfer parked in libcurl's PENDING state is not timed out there).
//   cc -O2 -o /tmp/goaway_stall bench/adhoc/goaway_stall.c -lcurl
//   python3 Tests/fakes/h2sink.py --goaway-after 150 --goaway-linger   # READY <port> <ca>
//   /tmp/goaway_stall https://127.0.0.1:<port>/push/x <ca> 1000 100 [timeout_ms=20000 [stall_s=2]]
// Not a test (exits 0 either way); prints STALL lines when it sees one.
#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define LINES 6
struct xfer {
    int id;
    double added;
    char last[LINES][160];
    int nlast;
};

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}
static size_t wcb(char *p, size_t s, size_t n, void *u) { (void)p; (void)u; return s * n; }

static int dbg(CURL *e, curl_infotype type, char *data, size_t size, void *u) {
    (void)e;
    struct xfer *x = u;
    if (type != CURLINFO_TEXT) return 0;
    char *slot = x->last[x->nlast % LINES];
    size_t n = size < 159 ? size : 159;
    memcpy(slot, data, n);
    slot[n] = 0;
    if (n && slot[n - 1] == '\n') slot[n - 1] = 0;
    x->nlast++;
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 5) {
        fprintf(stderr, "usage: %s url ca total window [timeout_ms [stall_s]]\n", argv[0]);
        return 2;
    }
    const char *url = argv[1], *ca = argv[2];
    int total = atoi(argv[3]), window = atoi(argv[4]);
    long timeout_ms = argc > 5 ? atol(argv[5]) : 20000;
    double stall_s = argc > 6 ? atof(argv[6]) : 2.0;
    curl_global_init(CURL_GLOBAL_ALL);
    CURLM *m = curl_multi_init();
    curl_multi_setopt(m, CURLMOPT_PIPELINING, CURLPIPE_MULTIPLEX);
    curl_multi_setopt(m, CURLMOPT_MAX_HOST_CONNECTIONS, 1L);
    curl_multi_setopt(m, CURLMOPT_MAX_CONCURRENT_STREAMS, 100L);
    struct xfer *xs = calloc(total, sizeof *xs);
    CURL **easy = calloc(total, sizeof *easy);
    int started = 0, done = 0, ok = 0, failed = 0, stalls = 0, running = 0;
    long connects = 0;
    double t0 = now(), last_done = now(), stall_reported = 0, max_gap = 0;
    while (done < total) {
        while (started < total && started - done < window) {
            CURL *e = curl_easy_init();
            struct xfer *x = &xs[started];
            x->id = started;
            x->added = now();
            curl_easy_setopt(e, CURLOPT_URL, url);
            curl_easy_setopt(e, CURLOPT_CAINFO, ca);
            curl_easy_setopt(e, CURLOPT_HTTP_VERSION, CURL_HTTP_VERSION_2TLS);
            curl_easy_setopt(e, CURLOPT_PIPEWAIT, 1L);
            curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
            curl_easy_setopt(e, CURLOPT_POSTFIELDS, "{}");
            curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, timeout_ms);
            curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, wcb);
            curl_easy_setopt(e, CURLOPT_PRIVATE, x);
            curl_easy_setopt(e, CURLOPT_VERBOSE, 1L);
            curl_easy_setopt(e, CURLOPT_DEBUGFUNCTION, dbg);
            curl_easy_setopt(e, CURLOPT_DEBUGDATA, x);
            curl_multi_add_handle(m, e);
            easy[started] = e;
            started++;
        }
        curl_multi_perform(m, &running);
        CURLMsg *msg;
        int left;
        while ((msg = curl_multi_info_read(m, &left))) {
            if (msg->msg != CURLMSG_DONE) continue;
            CURL *e = msg->easy_handle;
            struct xfer *x = NULL;
            long n = 0;
            curl_easy_getinfo(e, CURLINFO_PRIVATE, (char **)&x);
            curl_easy_getinfo(e, CURLINFO_NUM_CONNECTS, &n);
            connects += n;
            if (msg->data.result == CURLE_OK) ok++;
            else {
                failed++;
                if (failed <= 5 || now() - x->added > 1.5)
                    printf("  transfer %d failed after %.2f s: %s\n", x->id, now() - x->added,
                           curl_easy_strerror(msg->data.result));
            }
            curl_multi_remove_handle(m, e);
            easy[x->id] = NULL;
            curl_easy_cleanup(e);
            done++;
            if (now() - last_done > max_gap) max_gap = now() - last_done;
            last_done = now();
        }
        double t = now();
        if (done < total && t - last_done > stall_s && t - stall_reported > 5.0) {
            stalls++;
            stall_reported = t;
            int waiting = 0, attached = 0;
            for (int i = 0; i < started; i++) {
                if (!easy[i]) continue;
                attached++;
                double pre = 0, lookup = 0;
                curl_easy_getinfo(easy[i], CURLINFO_PRETRANSFER_TIME, &pre);
                curl_easy_getinfo(easy[i], CURLINFO_NAMELOOKUP_TIME, &lookup);
                if (pre == 0 && lookup == 0) waiting++;
            }
            printf("STALL at %.2f s: nothing finished for %.1f s; %d done, %d attached (%d never got a connection), "
                   "multi says %d running, %ld connections opened so far\n",
                   t - t0, t - last_done, done, attached, waiting, running, connects);
            int shown = 0;
            for (int i = 0; i < started && shown < 3; i++) {
                if (!easy[i]) continue;
                shown++;
                printf("  transfer %d (attached %.2f s ago), its last libcurl lines:\n", i, t - xs[i].added);
                int from = xs[i].nlast > LINES ? xs[i].nlast - LINES : 0;
                for (int k = from; k < xs[i].nlast; k++) printf("    | %s\n", xs[i].last[k % LINES]);
            }
            fflush(stdout);
        }
        if (done < total) curl_multi_poll(m, NULL, 0, 100, NULL);
    }
    printf("%d ok, %d failed of %d in %.2f s, %ld connections, longest time without a finished transfer %.3f s, "
           "%d stall report(s)\n", ok, failed, total, now() - t0, connects, max_gap, stalls);
    return 0;
}
