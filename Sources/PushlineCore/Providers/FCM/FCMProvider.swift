import Logging
import Synchronization

/// The FCM HTTP v1 provider: one per app with an `fcm` block.
///
/// Authenticates with the service account's OAuth2 token (cached, refreshed before expiry, single
/// flight), sends one request per token (FCM v1 has no multicast) with up to `maxInFlight` running
/// at once over the shared HTTP/2 transport, sends to topics and conditions, and manages topic
/// subscriptions through `FCMTopicManagement`.
///
/// ```swift
/// let fcm = try FCMProvider(app: "default", config: cfg, context: ctx)
/// try fcm.validate(n)
/// let results = await fcm.send(n, to: devices)   // one per device, in order
/// ```
public final class FCMProvider: TopicProvider {
    public let platform: Platform = .fcm
    /// Sends in flight at once for one command: enough to fill two connections of 1000 streams
    /// (the transport queues what its connections cannot take).
    public static let maxInFlight = 2000
    /// Attempts per message for UNAVAILABLE/INTERNAL and lost connections.
    static let maxAttempts = 4
    /// A Retry-After longer than this is not waited for: the result is retryable with a hint.
    static let maxRetryWaitMs = 10_000
    /// The least time a project backs off after QUOTA_EXCEEDED (Google asks for a minute).
    static let quotaBackoffMs = 60_000

    public let app: String
    public let projectId: String
    let sendURL: String
    let tls: TLSOptions
    let timeoutMs: Int
    let transport: HTTPTransport
    let logger: Logger
    let tokens: FCMTokenSource
    let topicManagement: any FCMTopicManagement
    /// The last access token's send headers (see `sendHeaders`).
    let headerCache = Mutex<(bearer: String, headers: [(String, String)])?>(nil)
    /// Monotonic deadline (ns) of this project's quota backoff; 0 when none.
    let quotaUntil = Mutex<UInt64>(0)

    public init(app: String, config: FCMConfig, context: ProviderContext) throws(ConfigError) {
        let key = config.path + ".service_account_path"
        let account = try FCMServiceAccount(path: config.serviceAccountPath, configKey: key)
        let rsa: RSAPrivateKey
        switch FCMAssertion.key(account.privateKeyPEM) {
        case .success(let k): rsa = k
        case .failure(let e): throw ConfigError(key, "'\(config.serviceAccountPath)': 'private_key': \(e)")
        }
        guard let project = config.projectId ?? account.projectId else {
            throw ConfigError(config.path + ".project_id", "is required: '\(config.serviceAccountPath)' has no project_id")
        }
        guard FCMTopicName.isValid(project) else { throw ConfigError(config.path + ".project_id", "is not a project id") }
        self.app = app
        projectId = project
        sendURL = config.baseURL + "/v1/projects/" + project + "/messages:send"
        tls = TLSOptions(caFile: config.connection.caFile)
        timeoutMs = config.connection.requestTimeoutMs
        transport = context.transport
        var log = context.logger
        log[metadataKey: "app"] = .string(app)
        log[metadataKey: "provider"] = "fcm"
        logger = log
        tokens = FCMTokenSources.source(account: account, key: rsa, transport: context.transport, tls: tls, timeoutMs: timeoutMs)
        topicManagement = IIDTopicManagement(
            baseURL: config.iidBaseURL, tokens: tokens, transport: context.transport, tls: tls, timeoutMs: timeoutMs)
    }

    /// Token requests made for this provider's service account (tests).
    public var tokenRequestCount: Int { get async { await tokens.requestCount } }

    public func validate(_ notification: Notification) throws(CommandError) {
        _ = try FCMMessageBuilder.build(notification)
    }

    public func send(_ notification: Notification, to devices: [Device]) async -> [DeliveryResult] {
        guard !devices.isEmpty else { return [] }
        let prepared: PreparedMessage
        do { prepared = try PreparedMessage(notification) } catch {
            return devices.map { .failed($0, reason: "INVALID_ARGUMENT", extra: ["error": .string(error.message)]) }
        }
        // Up to `maxInFlight` workers each take the next device until none is left: far fewer tasks and
        // wake-ups of this task than one child task per device (a bulk may hold 100,000 devices).
        var results = [DeliveryResult?](repeating: nil, count: devices.count)
        let cursor = FCMCursor()
        let logger = self.logger
        await withTaskGroup(of: [(Int, DeliveryResult)].self) { group in
            for _ in 0..<min(Self.maxInFlight, devices.count) {
                group.addTask {
                    var done: [(Int, DeliveryResult)] = []
                    while true {
                        let i = cursor.take()
                        guard i < devices.count else { break }
                        let device = devices[i]
                        let o = await self.deliver(prepared.body(target: "token", device.registrationId))
                        done.append((i, o.result(device: device, dryRun: prepared.dryRun, logger: logger)))
                    }
                    return done
                }
            }
            for await done in group {
                for (i, r) in done { results[i] = r }
            }
        }
        return zip(devices, results).map { d, r in r ?? .failed(d, reason: "INTERNAL", retryable: true) }
    }

    public func sendToTopic(_ notification: Notification, topic: String?, condition: String?) async -> DeliveryResult {
        let target: (String, String)
        var shown = condition ?? topic ?? ""
        do throws(CommandError) {
            if let topic, condition == nil {
                target = ("topic", try FCMTopicName.normalize(topic))
                shown = "/topics/" + target.1
            } else if let condition, topic == nil {
                try FCMTopicName.checkCondition(condition)
                target = ("condition", condition)
            } else {
                throw CommandError.invalid("topic", "give exactly one of topic and condition")
            }
            let prepared = try PreparedMessage(notification)
            let o = await deliver(prepared.body(target: target.0, target.1))
            var r = o.result(device: nil, dryRun: prepared.dryRun, logger: logger)
            r.registrationId = shown
            r.deactivate = false
            return r
        } catch {
            return DeliveryResult(
                deviceId: nil, platform: .fcm, registrationId: shown, status: .failed,
                reason: "INVALID_ARGUMENT", extra: ["error": .string(error.message)])
        }
    }

    public func subscribe(_ devices: [Device], topic: String) async -> [DeliveryResult] {
        await changeSubscription(add: true, devices, topic: topic)
    }

    public func unsubscribe(_ devices: [Device], topic: String) async -> [DeliveryResult] {
        await changeSubscription(add: false, devices, topic: topic)
    }

    func changeSubscription(add: Bool, _ devices: [Device], topic: String) async -> [DeliveryResult] {
        guard !devices.isEmpty else { return [] }
        let name: String
        do { name = try FCMTopicName.normalize(topic) } catch {
            return devices.map { .failed($0, reason: "INVALID_ARGUMENT", extra: ["error": .string(error.message)]) }
        }
        let outcomes = await topicManagement.change(add: add, topic: name, tokens: devices.map(\.registrationId))
        return zip(devices, outcomes).map { d, o in
            switch o {
            case .ok: return .sent(d, extra: ["topic": .string(name)])
            case .failed(let code, let message, let retryable):
                var extra: JSONObject = ["topic": .string(name)]
                if let message { extra["error"] = .string(message) }
                // NOT_FOUND: Instance ID does not know the token (unregistered app instance).
                return .failed(d, reason: code, retryable: retryable, deactivate: code == "NOT_FOUND", extra: extra)
            }
        }
    }

    // MARK: - One message

    /// What became of one message.
    enum Outcome: Sendable {
        case sent(name: String?)
        case failed(reason: String, message: String?, retryable: Bool, deactivate: Bool, retryAfterMs: Int?)

        func result(device: Device?, dryRun: Bool, logger: Logger) -> DeliveryResult {
            let regId = device?.registrationId ?? ""
            switch self {
            case .sent(let name):
                var extra = JSONObject()
                if let name { extra["message_id"] = .string(name) }
                if dryRun { extra["dry_run"] = true }
                return DeliveryResult(deviceId: device?.id, platform: .fcm, registrationId: regId, status: .sent, extra: extra)
            case .failed(let reason, let message, let retryable, let deactivate, let retryAfterMs):
                var extra = JSONObject()
                if let message { extra["error"] = .string(message) }
                if let retryAfterMs { extra["retry_after_ms"] = .int(Int64(retryAfterMs)) }
                if dryRun { extra["dry_run"] = true }
                if deactivate {
                    logger.debug("FCM says token \(redact(regId)) is gone: \(reason)")
                }
                return DeliveryResult(
                    deviceId: device?.id, platform: .fcm, registrationId: regId, status: .failed, reason: reason,
                    retryable: retryable, deactivate: deactivate && !dryRun, extra: extra)
            }
        }
    }

    /// Pushline's reason for a request that got no HTTP answer (protocol.md, section 4).
    static func reason(_ e: TransportError) -> String {
        switch e.kind {
        case .timeout: return "timeout"
        case .connect: return "connect_error"
        case .tls: return "tls_error"
        case .connectionLost, .unavailable, .other: return "connection_lost"
        }
    }

    /// The send request's headers for an access token, built once per token and shared by every
    /// request (the transport then reuses its libcurl header list too).
    func sendHeaders(bearer: String) -> [(String, String)] {
        headerCache.withLock { c in
            if let c, c.bearer == bearer { return c.headers }
            let h = [("authorization", "Bearer " + bearer), ("content-type", "application/json; charset=UTF-8")]
            c = (bearer, h)
            return h
        }
    }

    /// Remaining quota backoff in ms, or nil.
    func quotaRemainingMs() -> Int? {
        let until = quotaUntil.withLock { $0 }
        guard until != 0 else { return nil }
        let now = monotonicNanos()
        return now < until ? Int((until - now) / 1_000_000) + 1 : nil
    }

    /// Starts (or extends) the project's quota backoff.
    func startQuotaBackoff(ms: Int) {
        let until = monotonicNanos() + UInt64(ms) * 1_000_000
        let started = quotaUntil.withLock { u -> Bool in
            let wasIdle = u < monotonicNanos()
            if until > u { u = until }
            return wasIdle
        }
        if started { logger.warning("FCM quota exceeded for project \(projectId): backing off \(ms / 1000) s") }
    }

    /// Sends one request body, with token refresh on 401 and retries of transient failures.
    func deliver(_ body: [UInt8]) async -> Outcome {
        var attempt = 0
        var refreshed = false
        var stale: String? = nil
        while true {
            if let ms = quotaRemainingMs() {
                return .failed(
                    reason: "QUOTA_EXCEEDED", message: "project \(projectId) is backing off after QUOTA_EXCEEDED",
                    retryable: true, deactivate: false, retryAfterMs: ms)
            }
            attempt += 1
            let bearer: String
            if stale == nil, let t = tokens.freshToken() {
                bearer = t
            } else {
                switch await tokens.token(replacing: stale) {
                case .success(let t): bearer = t
                case .failure(let e):
                    return .failed(
                        reason: e.reason, message: e.message, retryable: e.retryable, deactivate: false, retryAfterMs: nil)
                }
            }
            stale = nil
            let req = HTTPRequest(
                method: "POST", url: sendURL,
                headers: sendHeaders(bearer: bearer),
                body: body, tls: tls, timeoutMs: timeoutMs)
            let resp: HTTPResponse
            switch await transport.perform(req) {
            case .success(let r): resp = r
            case .failure(let e):
                // Lost before Google processed it (GOAWAY, refused stream, connect): safe to send again.
                if (e.kind == .connectionLost || e.kind == .connect) && attempt < Self.maxAttempts {
                    await Backoff.sleep(Backoff.delayMs(attempt: attempt))
                    continue
                }
                return .failed(
                    reason: Self.reason(e), message: e.description, retryable: e.retryable, deactivate: false,
                    retryAfterMs: nil)
            }
            if resp.status == 200 {
                let name = (try? JSONValue.parse(resp.body))?["name"]?.stringValue
                return .sent(name: name)
            }
            let info = FCMErrorInfo(httpStatus: resp.status, body: resp.body)
            switch FCMFailure.classify(info) {
            case .refreshToken:
                if !refreshed {
                    refreshed = true
                    stale = bearer
                    attempt -= 1
                    continue
                }
                return .failed(
                    reason: info.code, message: "the OAuth2 token was refused twice: \(info.detailed)", retryable: false,
                    deactivate: false, retryAfterMs: nil)
            case .retry(let code):
                let delay = Backoff.delayMs(attempt: attempt, retryAfterHeader: resp.header("retry-after"))
                if attempt < Self.maxAttempts && delay <= Self.maxRetryWaitMs {
                    await Backoff.sleep(delay)
                    continue
                }
                return .failed(reason: code, message: info.detailed, retryable: true, deactivate: false, retryAfterMs: delay)
            case .quota:
                let ms = Backoff.delayMs(
                    attempt: 1, retryAfterHeader: resp.header("retry-after"), floorMs: Self.quotaBackoffMs)
                startQuotaBackoff(ms: ms)
                return .failed(reason: info.code, message: info.detailed, retryable: true, deactivate: false, retryAfterMs: ms)
            case .targetRate:
                // Only this device (or topic) is over its rate: no project-wide backoff.
                let ms = Backoff.delayMs(
                    attempt: 1, retryAfterHeader: resp.header("retry-after"), floorMs: Self.quotaBackoffMs)
                return .failed(reason: info.code, message: info.detailed, retryable: true, deactivate: false, retryAfterMs: ms)
            case .deactivate(let reason):
                return .failed(reason: reason, message: info.detailed, retryable: false, deactivate: true, retryAfterMs: nil)
            case .fail(let code, let message, let retryable):
                return .failed(reason: code, message: message, retryable: retryable, deactivate: false, retryAfterMs: nil)
            }
        }
    }
}

/// The next index to work on, shared by a send's workers.
final class FCMCursor: Sendable {
    private let next = Atomic<Int>(0)
    /// Returns an index no other caller gets.
    func take() -> Int { next.wrappingAdd(1, ordering: .relaxed).oldValue }
}

/// A built message serialized once, into which each request's target is spliced.
struct PreparedMessage: Sendable {
    let messageTail: [UInt8]
    let end: [UInt8]
    let dryRun: Bool

    init(_ n: Notification) throws(CommandError) {
        let m = try FCMMessageBuilder.build(n)
        let bytes = JSONValue.object(m).serialized()
        // `{...}` without its "{": spliced after the target member.
        messageTail = m.isEmpty ? Array("}".utf8) : [UInt8(ascii: ",")] + bytes.dropFirst()
        dryRun = n.dryRun
        end = Array((n.dryRun ? #","validate_only":true}"# : "}").utf8)
    }

    /// `{"message":{"<target>":"<value>",...}}` (plus `"validate_only":true` for a dry run).
    func body(target: String, _ value: String) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(messageTail.count + value.utf8.count + 40)
        out.append(contentsOf: #"{"message":{"#.utf8)
        JSONValue.writeString(target, to: &out)
        out.append(UInt8(ascii: ":"))
        JSONValue.writeString(value, to: &out)
        out.append(contentsOf: messageTail)
        out.append(contentsOf: end)
        return out
    }
}
