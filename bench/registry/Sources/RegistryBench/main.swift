// Measures Registry throughput: concurrent single-device registers (group commit)
// and batched registers. Usage: swift run -c release RegistryBench [singles] [batches]
//
// `swift run -c release RegistryBench scale [100000,1000000]`: the registry's large paths at each
// size (batched register CPU, stats, a filter's group counts, paging through every device as a
// send does, `devices` for one user, deactivate + prune of 1%) and the ratios of the largest size
// to the smallest (issue 11: rates should hold, latencies should not grow with the registry).
import Glibc
import PushlineCore

func tempDir() -> String {
    var tmpl = Array("/tmp/pushline-bench-XXXXXX".utf8CString)
    let p = tmpl.withUnsafeMutableBufferPointer { buf -> String? in
        guard let base = buf.baseAddress else { return nil }
        return mkdtemp(base).map { String(cString: $0) }
    }
    guard let p else { fatalError("mkdtemp failed") }
    return p
}

/// CPU time of the whole process (all threads), in seconds.
func cpuSeconds() -> Double {
    var ts = timespec()
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts)
    return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
}

/// CPU seconds (user + system) of the registry's database thread, from /proc (10 ms resolution).
func dbThreadSeconds() -> Double {
    guard let dir = opendir("/proc/self/task") else { return 0 }
    defer { closedir(dir) }
    while let e = readdir(dir) {
        let name = withUnsafeBytes(of: e.pointee.d_name) { String(decoding: $0.prefix(while: { $0 != 0 }), as: UTF8.self) }
        guard let comm = readFile("/proc/self/task/\(name)/comm"), String(decoding: comm, as: UTF8.self).hasPrefix("pushline-db") else { continue }
        guard let stat = readFile("/proc/self/task/\(name)/stat") else { return 0 }
        let text = String(decoding: stat, as: UTF8.self)
        guard let close = text.lastIndex(of: ")") else { return 0 }
        let fields = text[text.index(after: close)...].split(separator: " ")
        // After the comm: state is field 3, utime 14, stime 15 (1-based) -> indexes 11 and 12 here.
        guard fields.count > 12, let u = Double(fields[11]), let s = Double(fields[12]) else { return 0 }
        return (u + s) / Double(sysconf(Int32(_SC_CLK_TCK)))
    }
    return 0
}

func token(_ prefix: String, _ i: Int) -> String {
    // FCM-like opaque token of realistic length (~160 bytes).
    prefix + String(i) + ":" + String(repeating: "A", count: 150)
}

let args = CommandLine.arguments
if args.count > 1 && args[1] == "scale" {
    let sizes = (args.count > 2 ? args[2] : "100000,1000000").split(separator: ",").compactMap { Int($0) }
    var figures: [[String: Double]] = []
    for n in sizes { figures.append(try await scale(n)) }
    if figures.count > 1, let small = figures.first, let large = figures.last {
        print("== ratios \(sizes[sizes.count - 1]) / \(sizes[0]) (rates: 1.00 is linear; latencies: 1.00 is flat)")
        for key in small.keys.sorted() {
            guard let a = small[key], let b = large[key], a > 0 else { continue }
            print("  \(key): \(String(format2(b / a))) (\(format2(a)) -> \(format2(b)))")
        }
    }
    exit(0)
}
let singles = args.count > 1 ? Int(args[1]) ?? 40_000 : 40_000
let batches = args.count > 2 ? Int(args[2]) ?? 200 : 200
let concurrency = 256

let dir = tempDir()
let reg = try Registry(path: dir + "/registry.db")

// 1. Concurrent single-device registers.
do {
    let inputs = try (0..<singles).map { i in try DeviceInput(platform: .fcm, registrationId: token("s", i), user: String(i % 1000)) }
    let t0 = monotonicNanos()
    let c0 = cpuSeconds()
    let d0 = dbThreadSeconds()
    await withTaskGroup(of: Void.self) { group in
        for w in 0..<concurrency {
            group.addTask {
                var i = w
                while i < inputs.count {
                    do { _ = try await reg.register([inputs[i]], updateOnDuplicate: false) } catch { print("error: \(error)") }
                    i += concurrency
                }
            }
        }
    }
    let dt = Double(monotonicNanos() - t0) / 1e9
    let cpu = cpuSeconds() - c0
    let dbt = dbThreadSeconds() - d0
    print("  database thread CPU: \(Int(dbt * 1000)) ms = \(Double(Int(dbt * 1e8 / Double(singles))) / 100) us/register")
    print("single registers: \(singles) in \(String(Int(dt * 1000))) ms = \(Int(Double(singles) / dt))/s wall (\(concurrency) concurrent callers); CPU \(Int(cpu * 1e6 / Double(singles))) us/register = \(Int(Double(singles) / cpu))/s per CPU second")
}

// 2. Batched registers, 1000 devices per request, 2 requests in flight.
do {
    let batchInputs = try (0..<batches).map { b in
        try (0..<1000).map { i in try DeviceInput(platform: .fcm, registrationId: token("b\(b)-", i), user: String(i)) }
    }
    let t0 = monotonicNanos()
    let c0 = cpuSeconds()
    let d0 = dbThreadSeconds()
    await withTaskGroup(of: Void.self) { group in
        for w in 0..<2 {
            group.addTask {
                var b = w
                while b < batchInputs.count {
                    do { _ = try await reg.register(batchInputs[b], updateOnDuplicate: false) } catch { print("error: \(error)") }
                    b += 2
                }
            }
        }
    }
    let dt = Double(monotonicNanos() - t0) / 1e9
    let n = batches * 1000
    let cpu = cpuSeconds() - c0
    let dbt = dbThreadSeconds() - d0
    print("  database thread CPU: \(Int(dbt * 1000)) ms = \(Double(Int(dbt * 1e8 / Double(n))) / 100) us/device")
    print("batched registers: \(n) devices in \(String(Int(dt * 1000))) ms = \(Int(Double(n) / dt)) devices/s wall (1000 per request); CPU \(Double(Int(cpu * 1e8 / Double(n))) / 100) us/device = \(Int(Double(n) / cpu))/s per CPU second")
}

// 3. Reads: resolve 1000 tokens per call.
do {
    let tokens = (0..<1000).map { token("b0-", $0) }
    let t0 = monotonicNanos()
    for _ in 0..<50 { _ = try await reg.resolveTokens(app: "default", platform: .fcm, tokens) }
    let dt = Double(monotonicNanos() - t0) / 1e9
    print("resolveTokens: \(Int(50_000 / dt)) lookups/s")
}

let s = try await reg.stats()
print("total devices: \(s.total)")
reg.close()
for f in ["registry.db", "registry.db-wal", "registry.db-shm"] { unlink(dir + "/" + f) }
rmdir(dir)

func format2(_ v: Double) -> String {
    let r = (v * 100).rounded() / 100
    return r >= 1000 ? String(Int(r)) : String(r)
}

func millis(_ body: () async throws -> Void) async rethrows -> Double {
    let t0 = monotonicNanos()
    try await body()
    return Double(monotonicNanos() - t0) / 1e6
}

/// The registry's large paths at `n` APNs devices (two per user); returns figures by name.
func scale(_ n: Int) async throws -> [String: Double] {
    let dir = tempDir()
    let reg = try Registry(path: dir + "/registry.db")
    var out: [String: Double] = [:]
    // Batched registers, 5000 per request, two in flight (inputs made before the clock starts).
    var wallMs = 0.0
    var dbCPU = 0.0
    var start = 0
    while start < n {
        let end = min(start + 100_000, n)
        let batches = try stride(from: start, to: end, by: 5000).map { b in
            try (b..<min(b + 5000, end)).map { i in
                try DeviceInput(platform: .apns, registrationId: String(repeating: "0", count: 48) + hex16(i + 1), user: "user\(i / 2)")
            }
        }
        let d0 = dbThreadSeconds()
        wallMs += try await millis {
            try await withThrowingTaskGroup(of: Void.self) { group in
                for w in 0..<2 {
                    group.addTask {
                        var b = w
                        while b < batches.count {
                            _ = try await reg.register(batches[b], updateOnDuplicate: false)
                            b += 2
                        }
                    }
                }
                try await group.waitForAll()
            }
        }
        dbCPU += dbThreadSeconds() - d0
        start = end
    }
    out["register devices/s"] = Double(n) / (wallMs / 1000)
    out["register db-thread us/device"] = dbCPU * 1e6 / Double(n)
    print("[\(n)] batched register: \(Int(Double(n) / (wallMs / 1000))) devices/s, database thread \(format2(dbCPU * 1e6 / Double(n))) us/device")

    var lat: [Double] = []
    for _ in 0..<20 { lat.append(try await millis { _ = try await reg.stats() }) }
    lat.sort()
    out["stats ms"] = lat[lat.count / 2]
    var f = DeviceFilter()
    f.platform = .apns
    f.active = true
    lat = []
    for _ in 0..<20 { lat.append(try await millis { _ = try await reg.groups(f) }) }
    lat.sort()
    out["groups ms"] = lat[lat.count / 2]
    print("[\(n)] stats: median \(format2(out["stats ms"] ?? 0)) ms; group counts of {platform: apns}: median \(format2(out["groups ms"] ?? 0)) ms")

    // Paging through every device as a send to {platform: apns} does (one part per group).
    var part = f
    part.app = "default"
    var seen = 0
    let pageMs = try await millis {
        var cursor: Registry.PageCursor? = Registry.PageCursor()
        while let c = cursor {
            let (devices, next) = try await reg.page([part], from: c, limit: 5000)
            seen += devices.count
            cursor = next
        }
    }
    out["paging devices/s"] = Double(seen) / (pageMs / 1000)
    print("[\(n)] paging every device, 5000 a page: \(seen) in \(Int(pageMs)) ms = \(Int(Double(seen) / (pageMs / 1000))) devices/s")

    lat = []
    var rng = SystemRandomNumberGenerator()
    for _ in 0..<1000 {
        var u = DeviceFilter()
        u.user = "user\(Int.random(in: 0..<(n / 2), using: &rng))"
        u.limit = 101
        lat.append(try await millis { _ = try await reg.devices(u) })
    }
    lat.sort()
    out["devices by user ms"] = lat[lat.count / 2]
    print("[\(n)] devices by user: median \(format2(lat[lat.count / 2])) ms, max \(format2(lat[lat.count - 1])) ms")

    // Deactivate 1% (as a send's dead tokens do) and prune them.
    let dead = (0..<(n / 100)).map { Registry.Deactivation(id: Int64($0 * 100 + 1), reason: "Unregistered", at: 1) }
    let deactMs = try await millis { _ = await reg.deactivate(dead) }
    var pruned = 0
    let pruneMs = try await millis { pruned = try await reg.prune(inactiveBefore: nil) }
    out["prune ms per 1k deleted"] = pruneMs / Double(max(1, pruned)) * 1000
    print("[\(n)] deactivate \(dead.count): \(Int(deactMs)) ms; prune: \(pruned) deleted in \(Int(pruneMs)) ms")
    let total = try await reg.stats().total
    precondition(total == n - pruned, "stats total \(total) != \(n - pruned)")
    reg.close()
    for f in ["registry.db", "registry.db-wal", "registry.db-shm"] { unlink(dir + "/" + f) }
    rmdir(dir)
    return out
}

func hex16(_ v: Int) -> String {
    let s = String(v, radix: 16)
    return String(repeating: "0", count: max(0, 16 - s.count)) + s
}
