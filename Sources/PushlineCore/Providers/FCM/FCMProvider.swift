import Logging
import Synchronization

/// The FCM HTTP v1 provider: one per app with an `fcm` block.
///
/// Authenticates with the service account's OAuth2 token (cached, refreshed before expiry, single
/// flight), sends one request per token (FCM v1 has no multicast) in `performAll` batches, up to
/// `maxInFlight` at once, over the shared HTTP/2 transport, sends to topics and conditions, and manages topic
/// subscriptions through `FCMTopicManagement`.
///
/// ```swift
/// let fcm = try FCMProvider(app: "default", config: cfg, context: ctx)
/// try fcm.validate(n)
/// let results = await fcm.send(n, to: devices)   // one per device, in order
/// ```
public final class FCMProvider: TopicProvider {
    public let platform: Platform = .fcm
    /// Sends in flight at once for one command: two `performAll` batches, enough to fill two
    /// connections of 1000 streams (the transport queues what its connections cannot take).
    public static let maxInFlight = 2 * batchSize
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
    /// The fcm block's `max_connections` (for the send and Instance ID origins).
    let maxConnections: Int
    let transport: any HTTPClient
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
        guard !project.isEmpty, project.utf8.count <= 900, project.utf8.allSatisfy(TopicName.isNameByte) else { throw ConfigError(config.path + ".project_id", "is not a project id") }
        self.app = app
        projectId = project
        sendURL = config.baseURL + "/v1/projects/" + project + "/messages:send"
        tls = TLSOptions(caFile: config.connection.caFile, proxy: config.connection.proxy)
        timeoutMs = config.connection.requestTimeoutMs
        maxConnections = config.connection.maxConnections
        transport = context.transport
        var log = context.logger
        log[metadataKey: "app"] = .string(app)
        log[metadataKey: "provider"] = "fcm"
        logger = log
        tokens = FCMTokenSources.source(
            account: account, key: rsa, transport: context.transport, tls: tls, timeoutMs: timeoutMs, store: context.store)
        topicManagement = IIDTopicManagement(
            baseURL: config.iidBaseURL, tokens: tokens, transport: context.transport, tls: tls, timeoutMs: timeoutMs,
            maxConnections: maxConnections)
    }

    /// Token requests made for this provider's service account (tests).
    public var tokenRequestCount: Int { get async { await tokens.requestCount } }

    public func validate(_ notification: PushNotification) throws(CommandError) {
        _ = try FCMMessageBuilder.build(notification)
    }

    public func send(_ notification: PushNotification, to devices: [Device]) async -> [DeliveryResult] {
        guard !devices.isEmpty else { return [] }
        let prepared: PreparedMessage
        do { prepared = try PreparedMessage(notification) } catch {
            return devices.map { .failed($0, .badRequest("INVALID_ARGUMENT"), extra: ["error": .string(error.message)]) }
        }
        if devices.count == 1 {
            let o = await deliver(prepared.body(target: "token", devices[0].registrationId))
            return [o.result(device: devices[0], dryRun: prepared.dryRun, logger: logger)]
        }
        // Large sends go to the transport in batches (one suspension per batch, not per device),
        // two batches in flight so the connections never idle between them. Only answers that need
        // another look (401 refresh, retries, quota) get a task of their own, in `deliver`.
        // One send is a bulk of one message: the same batches as `send(_ messages:)`.
        let one = [Addressed(notification, to: devices)]
        return await BulkSend.run(prepared, to: devices, batchSize: Self.batchSize, noResult: Self.noResult) { p, items, range in
            await self.sendItems(p, one, items, range)
        }
    }

    /// Requests in one `performAll` batch; two batches are in flight.
    static let batchSize = 2000

    static func noResult(_ d: Device) -> DeliveryResult { .failed(d, .providerError("INTERNAL"), retryable: true) }

    /// A bulk's messages to this project's devices: the requests of every message go to the
    /// transport together, in `performAll` batches as the devices of one send do, instead of a
    /// `perform` per message. A message that fails to build goes through `send(_:to:)`.
    public func send(_ messages: [Addressed]) async -> [[DeliveryResult]] {
        await BulkSend.run(
            messages, batchSize: Self.batchSize, prepare: { try? PreparedMessage($0.notification) },
            unprepared: { m in await send(m.notification, to: m.devices) }, noResult: Self.noResult,
            batch: { prepared, items, range in await self.sendItems(prepared, messages, items, range) })
    }

    /// Sends `items[range]` (positions in several messages, or in one send's devices) in one
    /// transport batch with one access token, each with its message's body; other answers than
    /// 200 go to `deliver`, seeded with that answer.
    func sendItems(
        _ prepared: [PreparedMessage?], _ messages: [Addressed], _ items: [BulkSend.Item], _ range: Range<Int>
    ) async -> Batches.Outcome<DeliveryResult> {
        let logger = self.logger
        let failAll = { (o: Outcome) -> Batches.Outcome<DeliveryResult> in
            Batches.Outcome(range.map { n in
                let (k, i) = items[n]
                return (n, o.result(device: messages[k].devices[i], dryRun: prepared[k]?.dryRun ?? false, logger: logger))
            })
        }
        if let o = quotaOutcome() { return failAll(o) }
        let bearer: String
        if let t = tokens.freshToken() {
            bearer = t
        } else {
            switch await tokens.token(replacing: nil) {
            case .success(let t): bearer = t
            case .failure(let e):
                return failAll(.failed(reason: e.reason, message: e.message, retryable: e.retryable, deactivate: false, retryAfterMs: nil))
            }
        }
        let headers = sendHeaders(bearer: bearer)
        let (done, again) = await BulkSend.perform(
            range, on: transport,
            build: { n in
                let (k, i) = items[n]
                guard let p = prepared[k] else { return .result(Self.noResult(messages[k].devices[i])) }
                return .request(HTTPRequest(
                    method: "POST", url: sendURL, headers: headers, body: p.body(target: "token", messages[k].devices[i].registrationId),
                    tls: tls, timeoutMs: timeoutMs, maxConnections: maxConnections))
            }, accepted: { $0.status == 200 },
            sent: { n, r in
                let (k, i) = items[n]
                return Self.sent(r).result(device: messages[k].devices[i], dryRun: prepared[k]?.dryRun ?? false, logger: logger)
            })
        return Batches.outcome(done, retrying: again) { n, request, first in
            let (k, i) = items[n]
            let o = await self.deliver(request.body, first: (bearer, first))
            return (n, o.result(device: messages[k].devices[i], dryRun: prepared[k]?.dryRun ?? false, logger: logger))
        }
    }

    public func sendToTopic(_ notification: PushNotification, topic: TopicName?, condition: String?) async -> DeliveryResult {
        let target: (String, String)
        let shown = condition ?? topic.map { "/topics/" + $0.name } ?? ""
        do throws(CommandError) {
            if let topic, condition == nil {
                target = ("topic", topic.name)
            } else if let condition, topic == nil {
                try FCMTopicName.checkCondition(condition)
                target = ("condition", condition)
            } else {
                throw CommandError.invalid("topic", "give exactly one of topic and condition")
            }
            let prepared = try PreparedMessage(notification)
            let o = await deliver(prepared.body(target: target.0, target.1))
            var r = o.result(device: nil, dryRun: prepared.dryRun, logger: logger)
            r.target = .device(id: nil, platform: .fcm, registrationId: shown)
            r.deactivate = false
            return r
        } catch {
            return DeliveryResult(
                deviceId: nil, platform: .fcm, registrationId: shown, status: .failed,
                failure: .badRequest("INVALID_ARGUMENT"), extra: ["error": .string(error.message)])
        }
    }

    public func subscribe(_ devices: [Device], topic: TopicName) async -> [DeliveryResult] {
        await changeSubscription(add: true, devices, topic: topic)
    }

    public func unsubscribe(_ devices: [Device], topic: TopicName) async -> [DeliveryResult] {
        await changeSubscription(add: false, devices, topic: topic)
    }

    func changeSubscription(add: Bool, _ devices: [Device], topic: TopicName) async -> [DeliveryResult] {
        guard !devices.isEmpty else { return [] }
        let name = topic.name
        let outcomes = await topicManagement.change(add: add, topic: name, tokens: devices.map(\.registrationId))
        return zip(devices, outcomes).map { d, o in
            switch o {
            case .ok: return .sent(d, extra: ["topic": .string(name)])
            case .failed(let code, let message, let retryable):
                var extra: JSONObject = ["topic": .string(name)]
                if let message { extra["error"] = .string(message) }
                // NOT_FOUND: Instance ID does not know the token (unregistered app instance).
                return .failed(d, FCMReasons.failure(code), retryable: retryable, deactivate: code == "NOT_FOUND", extra: extra)
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
                    deviceId: device?.id, platform: .fcm, registrationId: regId, status: .failed, failure: FCMReasons.failure(reason),
                    retryable: retryable, deactivate: deactivate && !dryRun, extra: extra)
            }
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

    /// The outcome of a send while the project backs off after QUOTA_EXCEEDED, or nil.
    func quotaOutcome() -> Outcome? {
        guard let ms = quotaRemainingMs() else { return nil }
        return .failed(
            reason: "QUOTA_EXCEEDED", message: "project \(projectId) is backing off after QUOTA_EXCEEDED",
            retryable: true, deactivate: false, retryAfterMs: ms)
    }

    /// The outcome of a 200 answer (Google's message name).
    static func sent(_ r: HTTPResponse) -> Outcome {
        .sent(name: (try? JSONValue.parse(r.body))?["name"]?.stringValue)
    }

    /// Sends one request body, with token refresh on 401 and retries of transient failures.
    ///
    /// `first` is an answer already received for a first attempt made with `first.bearer`
    /// (from a batch): it is judged as if this call had sent it.
    func deliver(_ body: [UInt8], first: (bearer: String, answer: Result<HTTPResponse, TransportError>)? = nil) async -> Outcome {
        var attempt = 0
        var refreshed = false
        var stale: String? = nil
        var pending = first
        while true {
            attempt += 1
            let bearer: String
            let result: Result<HTTPResponse, TransportError>
            if let p = pending {
                pending = nil
                bearer = p.bearer
                result = p.answer
            } else {
                if let o = quotaOutcome() { return o }
                if stale == nil, let t = tokens.freshToken() {
                    bearer = t
                } else {
                    switch await tokens.token(replacing: stale) {
                    case .success(let t): bearer = t
                    case .failure(let e):
                        return .failed(
                            reason: e.reason, message: e.message, retryable: e.retryable, deactivate: false,
                            retryAfterMs: nil)
                    }
                }
                stale = nil
                let req = HTTPRequest(
                    method: "POST", url: sendURL, headers: sendHeaders(bearer: bearer), body: body, tls: tls,
                    timeoutMs: timeoutMs, maxConnections: maxConnections)
                result = await transport.perform(req)
            }
            let resp: HTTPResponse
            switch result {
            case .success(let r): resp = r
            case .failure(let e):
                // Lost before Google processed it (GOAWAY, refused stream, connect): safe to send again.
                if e.safeToResend && attempt < Self.maxAttempts {
                    Metrics.shared.providerRetry(app: app, platform: .fcm, reason: e.protocolReason)
                    await Backoff.sleep(Backoff.delayMs(attempt: attempt))
                    continue
                }
                return .failed(
                    reason: e.protocolReason, message: e.description, retryable: e.retryable, deactivate: false,
                    retryAfterMs: nil)
            }
            if resp.status == 200 { return Self.sent(resp) }
            let info = FCMErrorInfo(httpStatus: resp.status, body: resp.body)
            switch FCMFailure.classify(info) {
            case .refreshToken:
                if !refreshed {
                    refreshed = true
                    stale = bearer
                    Metrics.shared.providerRetry(app: app, platform: .fcm, reason: info.code)
                    attempt -= 1
                    continue
                }
                return .failed(
                    reason: info.code, message: "the OAuth2 token was refused twice: \(info.detailed)", retryable: false,
                    deactivate: false, retryAfterMs: nil)
            case .retry(let code):
                let delay = Backoff.delayMs(attempt: attempt, retryAfterHeader: resp.header("retry-after"))
                if attempt < Self.maxAttempts && delay <= Self.maxRetryWaitMs {
                    Metrics.shared.providerRetry(app: app, platform: .fcm, reason: code)
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

/// A built message serialized once, into which each request's target is spliced.
struct PreparedMessage: Sendable {
    let messageTail: [UInt8]
    let end: [UInt8]
    let dryRun: Bool

    init(_ n: PushNotification) throws(CommandError) {
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
