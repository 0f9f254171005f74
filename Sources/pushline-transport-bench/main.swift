// Throughput bench of HTTPTransport (not a test): fires N POSTs at an HTTP/2 TLS sink
// (bench/sink, nginx) and prints req/s, CPU seconds and peak RSS.
//
//   pushline-transport-bench --url https://127.0.0.1:18443/ --ca /tmp/x/cert.pem \
//       [-n 100000] [--threads 2] [--connections 1] [--streams 1000] [--window 4000] [--h2load-rps 95000]
import Glibc
import PushlineCore

struct BenchArgs {
    var url = "https://127.0.0.1:18443/"
    var ca: String?
    var requests = 100_000
    var threads = 2
    var connections = 1
    var streams = 1000
    var window = 2000
    var h2loadRate: Double?

    init(_ argv: [String]) {
        var i = 1
        func value() -> String {
            i += 1
            guard i < argv.count else { fail("missing value for \(argv[i - 1])") }
            return argv[i]
        }
        while i < argv.count {
            switch argv[i] {
            case "--url": url = value()
            case "--ca": ca = value()
            case "-n", "--requests": requests = Int(value()) ?? requests
            case "--threads": threads = Int(value()) ?? threads
            case "--connections": connections = Int(value()) ?? connections
            case "--streams": streams = Int(value()) ?? streams
            case "--window": window = Int(value()) ?? window
            case "--h2load-rps": h2loadRate = Double(value())
            default: fail("unknown argument \(argv[i])")
            }
            i += 1
        }
    }
}

func fail(_ message: String) -> Never {
    print("pushline-transport-bench: \(message)")
    exit(2)
}

func cpuSeconds() -> (user: Double, sys: Double, maxRSSKiB: Int) {
    var ru = rusage()
    guard getrusage(RUSAGE_SELF.rawValue, &ru) == 0 else { return (0, 0, 0) }
    let user = Double(ru.ru_utime.tv_sec) + Double(ru.ru_utime.tv_usec) / 1e6
    let sys = Double(ru.ru_stime.tv_sec) + Double(ru.ru_stime.tv_usec) / 1e6
    return (user, sys, ru.ru_maxrss)
}

/// Sends `count` copies of `request` from `window` concurrent senders (each sends one after
/// another); returns (ok, failed, first error).
///
/// A fixed set of long-lived child tasks: a task group with thousands of short children spends
/// its time in TaskGroup bookkeeping, which would be measured instead of the transport.
func fire(_ transport: HTTPTransport, _ request: HTTPRequest, count: Int, window: Int) async -> (Int, Int, String?) {
    let senders = max(1, min(window, count))
    return await withTaskGroup(of: (Int, Int, String?).self) { group in
        for s in 0..<senders {
            let share = count / senders + (s < count % senders ? 1 : 0)
            group.addTask {
                var ok = 0
                var failed = 0
                var firstError: String?
                for _ in 0..<share {
                    switch await transport.perform(request) {
                    case .success(let r) where r.status == 200: ok += 1
                    case .success(let r):
                        failed += 1
                        if firstError == nil { firstError = "status \(r.status)" }
                    case .failure(let e):
                        failed += 1
                        if firstError == nil { firstError = e.description }
                    }
                }
                return (ok, failed, firstError)
            }
        }
        var total = (0, 0, String?.none)
        for await (ok, failed, err) in group {
            total.0 += ok
            total.1 += failed
            if total.2 == nil { total.2 = err }
        }
        return total
    }
}

func runBench() async {
    let args = BenchArgs(CommandLine.arguments)
    let transport = HTTPTransport(
        options: TransportOptions(
            threads: args.threads, maxConnectionsPerHost: args.connections, maxConcurrentStreams: args.streams))
    let request = HTTPRequest(
        method: "POST", url: args.url,
        headers: [("content-type", "application/json"), ("apns-topic", "com.example.bench")],
        body: Array(#"{"aps":{"alert":{"title":"Hello","body":"A benchmark notification"}}}"#.utf8),
        tls: TLSOptions(caFile: args.ca), timeoutMs: 30_000)

    // Warm-up: connections up, handles allocated.
    let (warmOK, _, warmErr) = await fire(transport, request, count: 2000, window: args.window)
    if warmOK == 0 { fail("warm-up failed: \(warmErr ?? "?")") }

    let before = cpuSeconds()
    let t0 = monotonicNanos()
    let (ok, failed, firstError) = await fire(transport, request, count: args.requests, window: args.window)
    let seconds = Double(monotonicNanos() - t0) / 1e9
    let after = cpuSeconds()
    let rate = Double(args.requests) / seconds
    let user = after.user - before.user
    let sys = after.sys - before.sys
    print("requests:      \(args.requests) (ok \(ok), failed \(failed)\(firstError.map { ", first error: \($0)" } ?? ""))")
    print("config:        threads=\(args.threads) connections/host/thread=\(args.connections) streams=\(args.streams) window=\(args.window)")
    print("wall:          \(fmt(seconds, 3)) s")
    print("rate:          \(fmt(rate, 0)) req/s")
    if let h2 = args.h2loadRate, h2 > 0 {
        print("vs h2load:     \(fmt(rate / h2, 2)) of \(fmt(h2, 0)) req/s")
    }
    print("cpu:           user \(fmt(user, 2)) s, sys \(fmt(sys, 2)) s, \(fmt((user + sys) / Double(args.requests) * 1e6, 1)) us/request")
    print("peak RSS:      \(fmt(Double(after.maxRSSKiB) / 1024, 1)) MiB")
    print("transport:     \(transport.stats)")
    usleep(4_000_000)  // The loops free surplus easy handles after 2 s of quiet (they poll every 1 s).
    print("RSS idle:      \(fmt(Double(currentRSSBytes()) / 1_048_576, 1)) MiB (4 s after the run, connections still open)")
    transport.shutdown()
    if failed > 0 { exit(1) }
}

/// Resident set size from /proc/self/statm (second field, in pages).
func currentRSSBytes() -> Int {
    let fd = open("/proc/self/statm", O_RDONLY)
    guard fd >= 0 else { return -1 }
    defer { close(fd) }
    var buf = [UInt8](repeating: 0, count: 128)
    let n = buf.withUnsafeMutableBytes { read(fd, $0.baseAddress, 127) }
    guard n > 0 else { return -1 }
    let fields = String(decoding: buf[0..<n], as: UTF8.self).split(separator: " ")
    guard fields.count > 1, let pages = Int(fields[1]) else { return -1 }
    return pages * Int(sysconf(Int32(_SC_PAGESIZE)))
}

func fmt(_ v: Double, _ decimals: Int) -> String {
    var p = 1.0
    for _ in 0..<decimals { p *= 10 }
    let r = (v * p).rounded() / p
    if decimals == 0 { return String(Int(r)) }
    return String(r)
}

await runBench()
