// Measures Registry throughput: concurrent single-device registers (group commit)
// and batched registers. Usage: swift run -c release RegistryBench [singles] [batches]
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
