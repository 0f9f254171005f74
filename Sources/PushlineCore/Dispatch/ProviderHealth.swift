import Logging
import Synchronization

/// Per (app, platform) provider health for `health` and the metrics recorded when a
/// provider's results come back (`Dispatcher.deliver`): last success, last failure and its
/// reason, consecutive failures.
///
/// A failure counts against the provider when it is not about one device: a retryable
/// failure (connection, TLS, timeout, 429, 5xx) or a refused credential. A device the
/// provider rejects (`BadDeviceToken`, `UNREGISTERED`...) or a bad payload does not.
public final class ProviderHealth: Sendable {
    public static let shared = ProviderHealth()

    public struct Entry: Sendable {
        public var lastSuccessMs: Int64?
        public var lastFailureMs: Int64?
        public var lastFailureReason: String?
        public var consecutiveFailures = 0
        public var inFlight = 0
    }

    /// After this many provider failures in a row (no success between), `health` says unhealthy.
    public static let unhealthyAfter = 3

    /// Reasons that mean the provider refused our credentials (not one device).
    static let credentialReasons: Set<String> = [
        "InvalidProviderToken", "ExpiredProviderToken", "MissingProviderToken", "BadCertificate",
        "BadCertificateEnvironment", "TooManyProviderTokenUpdates", "Forbidden", "THIRD_PARTY_AUTH_ERROR",
        "PERMISSION_DENIED", "UNAUTHENTICATED", "AUTH_ERROR", "token_request_failed", "unauthorized", "forbidden",
    ]

    /// A reason is a credential refusal when its code (before any ": explanation") is one.
    static func isCredentialReason(_ reason: String) -> Bool {
        let code = reason.split(separator: ":", maxSplits: 1).first.map(String.init) ?? reason
        return credentialReasons.contains(code)
    }

    private let state = Mutex<[String: Entry]>([:])
    /// `notifications{app,platform,outcome}` label sets rendered once per (app, platform) and
    /// outcome (`sent`, `failed`): `finish` runs for every send, and rendered them each time.
    private let outcomeLabels = Mutex<[String: (sent: String, failed: String)]>([:])

    public init() {}

    static func key(_ app: String, _ platform: Platform) -> String { "\(app)\u{0}\(platform.rawValue)" }

    /// Counts notifications in flight to a provider (for `health`).
    public func begin(app: String, platform: Platform, count: Int) {
        state.withLock { $0[Self.key(app, platform), default: Entry()].inFlight += count }
    }

    /// Records a provider's results: metrics by outcome and reason, and its health.
    public func finish(app: String, platform: Platform, results: [DeliveryResult], count: Int) {
        var sent = 0
        var failed = 0
        var retryable = 0
        var reasons: [String: Int] = [:]
        var providerFailure: String?
        var credentialFailure: DeliveryResult?
        for r in results {
            if r.status == .sent {
                sent += 1
                continue
            }
            failed += 1
            if r.retryable { retryable += 1 }
            let reason = r.reason ?? "unknown"
            // The label is the reason's code, without an explanation after ": " (bounded label values).
            reasons[reason.split(separator: ":", maxSplits: 1).first.map(String.init) ?? reason, default: 0] += 1
            let credential = Self.isCredentialReason(reason)
            if !r.deactivate && (r.retryable || credential) { providerFailure = reason }
            if credential { credentialFailure = r }
        }
        if let c = credentialFailure {
            // A refused provider token or credential (an FCM OAuth or WNS token request included):
            // one warning per app, platform and reason per minute.
            let reason = (c.reason ?? "unknown").split(separator: ":", maxSplits: 1).first.map(String.init) ?? "unknown"
            var meta: Logger.Metadata = ["app": "\(app)", "platform": "\(platform.rawValue)", "reason": "\(reason)"]
            if let e = c.extra["error"]?.stringValue ?? c.extra["message"]?.stringValue { meta["error"] = "\(ProviderWarnings.scrub(e))" }
            ProviderWarnings.shared.warn(key: "credential\u{0}\(app)\u{0}\(platform.rawValue)\u{0}\(reason)",
                                         "provider refused the credentials", meta)
        }
        let m = Metrics.shared
        let p = platform.rawValue
        let key = Self.key(app, platform)
        let labels = outcomeLabels.withLock { cache in
            if let l = cache[key] { return l }
            let l = (sent: Metrics.labelString(["app": app, "platform": p, "outcome": "sent"]),
                     failed: Metrics.labelString(["app": app, "platform": p, "outcome": "failed"]))
            cache[key] = l
            return l
        }
        if sent > 0 { m.inc(.notifications, renderedLabels: labels.sent, by: Double(sent)) }
        if failed > 0 { m.inc(.notifications, renderedLabels: labels.failed, by: Double(failed)) }
        if retryable > 0 { m.inc(.retryableFailures, ["app": app, "platform": p], by: Double(retryable)) }
        for (reason, n) in reasons { m.inc(.notificationFailures, ["app": app, "platform": p, "reason": reason], by: Double(n)) }
        let now = nowMillis()
        state.withLock { s in
            var e = s[key] ?? Entry()
            e.inFlight = max(0, e.inFlight - count)
            if sent > 0 {
                e.lastSuccessMs = now
                e.consecutiveFailures = 0
            }
            if let providerFailure {
                e.lastFailureMs = now
                e.lastFailureReason = providerFailure
                if sent == 0 { e.consecutiveFailures += 1 }
            }
            s[key] = e
        }
    }

    /// Records deactivations the registry carried out.
    public func deactivated(app: String, platform: Platform, reason: String, count: Int) {
        Metrics.shared.inc(.deactivations, ["app": app, "platform": platform.rawValue, "reason": reason], by: Double(count))
    }

    /// Connections open now to `provider`'s origin (`HTTPTransport.openConnections`), for `health`:
    /// APNs and FCM send to one configured origin (shared with other apps that use the same
    /// origin and pool); WebPush and WNS send to each subscriber's push service, so null.
    static func openConnections(_ provider: (any PushProvider)?, _ open: [String: Int]) -> JSONValue {
        let url: String
        switch provider {
        case let p as APNsProvider: url = p.baseURL
        case let p as FCMProvider: url = p.sendURL
        default: return .null
        }
        guard let origin = originKey(url) else { return .null }
        return .int(Int64(open[origin] ?? 0))
    }

    public func entry(app: String, platform: Platform) -> Entry {
        state.withLock { $0[Self.key(app, platform)] ?? Entry() }
    }
}
