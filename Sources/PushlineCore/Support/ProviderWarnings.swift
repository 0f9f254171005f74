import Logging
import Synchronization

/// Warning lines for provider outages, rate-limited so an outage gives one line per key
/// (origin, or app/platform/reason) per minute, with how many were folded into it.
///
/// ```swift
/// ProviderWarnings.shared.warn(key: origin, "provider connection failed", ["origin": "\(origin)", "error": "\(msg)"])
/// // later lines within the minute are counted; the next one after it says "suppressed=41"
/// ```
public final class ProviderWarnings: Sendable {
    public static let shared = ProviderWarnings()
    /// One line per key per this many nanoseconds.
    public static let window: UInt64 = 60_000_000_000

    private let state = Mutex<[String: (loggedAt: UInt64, suppressed: Int)]>([:])
    private let logger = Logger(label: "pushline")

    public init() {}

    /// Logs at warning unless `key` was logged less than a minute ago (then only counts it).
    public func warn(key: String, _ message: String, _ metadata: Logger.Metadata) {
        let now = monotonicNanos()
        let suppressed: Int? = state.withLock { s in
            if let e = s[key], now &- e.loggedAt < Self.window {
                s[key] = (e.loggedAt, e.suppressed + 1)
                return nil
            }
            let n = s[key]?.suppressed ?? 0
            s[key] = (now, 0)
            return n
        }
        guard let suppressed else { return }
        var m = metadata
        if suppressed > 0 { m["suppressed_last_minute"] = "\(suppressed)" }
        logger.warning("\(message)", metadata: m)
    }

    /// A transport failure to a provider origin (connect, TLS, timeout, lost connection): the
    /// cause, with anything token-like in curl's message shortened.
    public func transportFailure(origin: String, _ e: TransportError) {
        guard e.kind != .unavailable else { return }  // the daemon is stopping
        warn(key: "transport\u{0}\(origin)", "provider request failed",
             ["origin": "\(origin)", "reason": "\(e.protocolReason)", "error": "\(Self.scrub(e.message))"])
    }

    /// Replaces every run of 32 or more token characters with its first 8 and "..." (a
    /// message must never carry a full device token, key or secret).
    public static func scrub(_ s: String) -> String {
        var out = ""
        var run = ""
        func flush() {
            out += run.count >= 32 ? String(run.prefix(8)) + "..." : run
            run = ""
        }
        for c in s {
            if c.isLetter || c.isNumber || c == "-" || c == "_" || c == "=" || c == "+" || c == "/" { run.append(c) } else {
                flush()
                out.append(c)
            }
        }
        flush()
        return out
    }
}
