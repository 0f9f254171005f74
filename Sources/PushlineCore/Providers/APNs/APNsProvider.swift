import COpenSSL
import CPushlineShims
import Logging
import Synchronization

/// Delivers notifications to Apple devices through APNs over the shared HTTP/2 transport.
///
/// One instance per app with an `apns` block. Token auth signs an ES256 provider JWT
/// (shared per team through `APNsTokenCache`, persisted across restarts); certificate auth
/// presents the app's PEM certificate and key (maybe encrypted) in the TLS handshake.
///
/// Per device: 200 → sent (with Apple's `apns-id`); 410 `Unregistered`/`ExpiredToken`,
/// `BadDeviceToken`, `DeviceTokenNotForTopic` → failed and deactivated (with Apple's 410
/// timestamp); 429/500/503 and lost connections → retried with backoff, then a retryable
/// failure; `ExpiredProviderToken` → a new JWT (on new connections, at most one new token per
/// 20 minutes: see `APNsTokenCache`) and one retry; `TooManyProviderTokenUpdates` → the token
/// moves to new connections and the request is retried; other 403s → a configuration
/// failure naming the key id and team, after which the app's sends fail fast for a minute.
///
/// ```swift
/// let p = try APNsProvider(app: "shop", config: cfg, context: ctx)
/// try p.validate(n)
/// let results = await p.send(n, to: devices)
/// ```
public final class APNsProvider: PushProvider {
    public let platform: Platform = .apns
    public let app: String
    public let config: APNsConfig
    let context: ProviderContext
    /// `https://api.push.apple.com` (or sandbox, alternative port, or the configured endpoint).
    public let baseURL: String
    let tls: TLSOptions
    let credentials: APNsTokenCache.Credentials?
    let tokenCache: APNsTokenCache
    /// After a configuration error (403), sends fail fast with this reason until the deadline (monotonic ns).
    let blocked = Mutex<(reason: FailureReason, until: UInt64)?>(nil)

    /// Attempts per device for 429/500/503 and lost connections.
    public static let maxAttempts = 3
    /// How long a configuration error short-circuits further sends (ns).
    static let blockNanos: UInt64 = 60 * 1_000_000_000

    public convenience init(app: String, config: APNsConfig, context: ProviderContext) throws(ConfigError) {
        try self.init(app: app, config: config, context: context, tokenCache: .shared)
    }

    init(app: String, config: APNsConfig, context: ProviderContext, tokenCache: APNsTokenCache) throws(ConfigError) {
        self.app = app
        self.config = config
        self.context = context
        self.tokenCache = tokenCache
        let path = "apps.\(app).apns"
        if let e = config.connection.endpoint {
            baseURL = e
        } else {
            let host = config.environment == .production ? "api.push.apple.com" : "api.sandbox.push.apple.com"
            baseURL = "https://\(host)" + (config.useAlternativePort ? ":2197" : "")
        }
        switch config.auth {
        case .token(let keyPath, let keyId, let teamId):
            guard let pem = readFile(keyPath) else { throw ConfigError("\(path).key_path", "cannot read '\(keyPath)'") }
            let key: ECPrivateKey
            do { key = try ECPrivateKey(pem: pem) } catch {
                throw ConfigError("\(path).key_path", "not a usable APNs .p8 key (EC P-256 PEM): \(error)")
            }
            credentials = APNsTokenCache.Credentials(teamId: teamId, keyId: keyId, key: key)
            tls = TLSOptions(caFile: config.connection.caFile, proxy: config.connection.proxy)
        case .certificate(let certPath, let password):
            guard let pem = readFile(certPath) else {
                throw ConfigError("\(path).certificate_path", "cannot read '\(certPath)'")
            }
            let text = String(decoding: pem, as: UTF8.self)
            guard text.contains("-----BEGIN CERTIFICATE-----") else {
                throw ConfigError("\(path).certificate_path", "expected a PEM file with a CERTIFICATE block and its private key")
            }
            guard text.contains("PRIVATE KEY-----") else {
                throw ConfigError("\(path).certificate_path", "the PEM file has no private key block")
            }
            if text.contains("ENCRYPTED") && password == nil {
                throw ConfigError("\(path).certificate_password", "is required: the private key is encrypted")
            }
            guard Self.canReadPrivateKey(pem, password: password) else {
                throw ConfigError(
                    password == nil ? "\(path).certificate_path" : "\(path).certificate_password",
                    "cannot read the private key in '\(certPath)'" + (password == nil ? "" : " (wrong password?)"))
            }
            credentials = nil
            tls = TLSOptions(caFile: config.connection.caFile, clientCertFile: certPath, clientKeyPassword: password, proxy: config.connection.proxy)
        }
    }

    /// Whether OpenSSL can read (and, with `password`, decrypt) the private key of a PEM bundle,
    /// so that a bad certificate file or password is a configuration error at start, not a TLS failure per send.
    static func canReadPrivateKey(_ pem: [UInt8], password: String?) -> Bool {
        guard pem.count < Int(Int32.max) else { return false }
        ERR_clear_error()
        // The key is only probed: freed at once, never shared.
        guard let key = pl_pem_read_private_key(pem, Int32(pem.count), password) else {
            ERR_clear_error()
            return false
        }
        EVP_PKEY_free(key)
        return true
    }

    /// Builds the message for a notification (headers and payload), without the size check.
    public func message(_ n: PushNotification) throws(CommandError) -> APNsMessage {
        try APNsMessage(n, defaultTopic: config.topic, requireTopic: credentials != nil, nowSeconds: nowMillis() / 1000)
    }

    public func validate(_ notification: PushNotification) throws(CommandError) {
        try message(notification).checkSize()
    }

    /// An outbox delivery's apns-id: the job id's first 20 hex digits and the delivery's
    /// number, as a UUID.
    static func outboxApnsId(job: String, n: Int64) -> String {
        // 8-4-4-4-12: the job id's first 20 characters (0-padded), then n's low 48 bits in hex.
        let digits: StaticString = "0123456789abcdef"
        let v = UInt64(bitPattern: n) & 0xFFFF_FFFF_FFFF
        // Written in place into the string's own storage (one allocation a delivery).
        return String(unsafeUninitializedCapacity: 36) { out in
            var i = 0
            func put(_ c: UInt8) {
                if i == 8 || i == 13 || i == 18 || i == 23 {
                    out[i] = UInt8(ascii: "-")
                    i += 1
                }
                out[i] = c
                i += 1
            }
            var taken = 0
            for c in job.utf8.prefix(20) {
                put(c)
                taken += 1
            }
            for _ in taken..<20 { put(UInt8(ascii: "0")) }
            digits.withUTF8Buffer { d in
                for k in (0..<12).reversed() { put(d[Int((v >> UInt64(4 * k)) & 15)]) }
            }
            return i
        }
    }

    public func send(_ notification: PushNotification, to devices: [Device]) async -> [DeliveryResult] {
        guard !devices.isEmpty else { return [] }
        let msg: APNsMessage
        do {
            msg = try message(notification)
            try msg.checkSize()
        } catch {
            return devices.map { .failed($0, reason: error.message, retryable: false) }
        }
        if notification.dryRun {
            return devices.map { d in
                Self.isValidToken(d.registrationId)
                    ? .sent(d, extra: ["dry_run": .bool(true)])
                    : .failed(d, Self.badToken, retryable: false, extra: ["dry_run": .bool(true)])
            }
        }
        if let reason = blockedReason() {
            return devices.map { .failed($0, reason, retryable: false) }
        }
        // One provider token for the whole send (refreshed per device only on ExpiredProviderToken),
        // and one header list shared by every request.
        var headers = msg.headers
        var jwt: String? = nil
        var pool: UInt32 = 0
        if let c = credentials {
            do {
                let t = try await tokenCache.lease(for: c, store: context.store, nowSeconds: nowMillis() / 1000)
                retire(t)
                jwt = t.jwt
                pool = t.pool
                headers.append(("authorization", "bearer \(t.jwt)"))
            } catch {
                let reason = "cannot sign the APNs provider token (key id \(c.keyId), team \(c.teamId)): \(error)"
                return devices.map { .failed($0, .auth(reason), retryable: false) }
            }
        }
        let prepared = Prepared(msg: msg, headers: headers, jwt: jwt, pool: pool)
        if devices.count == 1 { return [await sendOne(prepared, devices[0])] }

        // Large sends go to the transport in batches (one suspension per batch, not per device),
        // two batches in flight so connections never idle between them. Only answers that need
        // more than one look (retries, a new provider token) get a task of their own.
        // One send is a bulk of one message: the same batches as `send(_ messages:)`.
        let one = [Addressed(notification, to: devices)]
        return await BulkSend.run(prepared, to: devices, batchSize: Self.batchSize, noResult: Self.noResult) { p, items, range in
            await self.sendItems(p, one, items, range)
        }
    }

    /// Requests in one `performAll` batch.
    static let batchSize = 2000

    /// A bulk's messages to this app's devices: the requests of every message go to the
    /// transport together, in `performAll` batches as the devices of one send do, instead of a
    /// `perform` (and a wake-up of the transport) per message. Messages that fail to build,
    /// dry runs, and everything while the app is blocked or has no provider token go through
    /// `send(_:to:)`, which answers them without the network.
    public func send(_ messages: [Addressed]) async -> [[DeliveryResult]] {
        var jwt: String? = nil
        var pool: UInt32 = 0
        if let c = credentials, let t = try? await tokenCache.lease(for: c, store: context.store, nowSeconds: nowMillis() / 1000) {
            retire(t)
            jwt = t.jwt
            pool = t.pool
        }
        return await BulkSend.run(
            messages, batchSize: Self.batchSize,
            prepare: { m in
                guard blockedReason() == nil, credentials == nil || jwt != nil, !m.notification.dryRun,
                    let msg = try? message(m.notification), (try? msg.checkSize()) != nil
                else { return nil }
                var headers = msg.headers
                if let jwt { headers.append(("authorization", "bearer \(jwt)")) }
                return Prepared(msg: msg, headers: headers, jwt: jwt, pool: pool)
            },
            unprepared: { m in await send(m.notification, to: m.devices) }, noResult: Self.noResult,
            batch: { prepared, items, range in await self.sendItems(prepared, messages, items, range) })
    }

    static func noResult(_ d: Device) -> DeliveryResult { .failed(d, .internalError("internal: no result"), retryable: true) }

    /// Sends `items[range]` (positions in several messages, or in one send's devices) in one
    /// transport batch, each with its message's prepared request and the key's current token;
    /// answers that need a retry go to `sendOne`.
    func sendItems(
        _ prepared: [Prepared?], _ messages: [Addressed], _ items: [BulkSend.Item], _ range: Range<Int>
    ) async -> Batches.Outcome<DeliveryResult> {
        if let reason = blockedReason() {
            return Batches.Outcome(range.map { ($0, .failed(messages[items[$0].message].devices[items[$0].device], reason, retryable: false)) })
        }
        // Each message's request with the key's current token (it may have changed since the
        // bulk began), looked up once per message in this batch.
        var current: [Int: Prepared] = [:]
        for n in range {
            let k = items[n].message
            if current[k] == nil, let p = prepared[k] { current[k] = await withCurrentToken(p) }
        }
        let (done, again) = await BulkSend.perform(
            range, on: context.transport,
            build: { n in
                let (k, i) = items[n]
                let d = messages[k].devices[i]
                guard let p = current[k], Self.isValidToken(d.registrationId) else {
                    return .result(.failed(d, Self.badToken, retryable: false))
                }
                return .request(request(p.msg, d, headers: p.headers, pool: p.pool))
            }, accepted: { $0.status == 200 },
            sent: { n, r in Self.sentResult(messages[items[n].message].devices[items[n].device], r) })
        // Every request was built from `current[k]`, so each retried item has its prepared message.
        let retry = again.compactMap { n, _, first in current[items[n].message].map { (n, $0, first) } }
        return Batches.outcome(done, retrying: retry) { n, p, first in
            let (k, i) = items[n]
            return (n, await self.sendOne(p, messages[k].devices[i], first: first))
        }
    }

    /// `p` with the key's current token: it may have changed since the send began
    /// (ExpiredProviderToken on an earlier batch, or its 50 minutes are up in a long send).
    func withCurrentToken(_ p: Prepared) async -> Prepared {
        guard let c = credentials,
            let t = try? await tokenCache.lease(for: c, store: context.store, nowSeconds: nowMillis() / 1000),
            t.jwt != p.jwt || t.pool != p.pool
        else { return p }
        retire(t)
        var q = p
        q.jwt = t.jwt
        q.pool = t.pool
        q.headers[q.headers.count - 1] = ("authorization", "bearer \(t.jwt)")
        return q
    }

    func request(_ msg: APNsMessage, _ device: Device, headers: [(String, String)], pool: UInt32) -> HTTPRequest {
        let token = device.registrationId
        var headers = headers
        var unique = 0
        // An outbox delivery's own apns-id, first (`authorization` stays last); the transport
        // sends it ahead of the header list it keeps for the others (`uniqueLeadingHeaders`).
        // Made here from the job and the delivery's number (no per-token map to build, fill
        // and look up: issue 13, the worker's share of a background delivery).
        if let job = msg.outboxJob, let n = device.outboxDelivery {
            var withId: [(String, String)] = []
            withId.reserveCapacity(headers.count + 1)
            withId.append(("apns-id", Self.outboxApnsId(job: job, n: n)))
            withId.append(contentsOf: headers)
            headers = withId
            unique = 1
        }
        return HTTPRequest(
            method: "POST", url: "\(baseURL)/3/device/\(token)", headers: headers, body: msg.body(for: token), tls: tls,
            timeoutMs: config.connection.requestTimeoutMs, maxConnections: config.connection.maxConnections,
            connectionPool: pool, uniqueLeadingHeaders: unique)
    }

    /// Retires the connection pool a token lease replaced (its connections close once idle).
    func retire(_ lease: APNsTokenCache.Lease) {
        if let old = lease.retiredPool { context.transport.retireConnectionPool(old) }
    }

    static func sentResult(_ device: Device, _ response: HTTPResponse) -> DeliveryResult {
        var extra = JSONObject()
        if let id = response.header("apns-id") { extra["apns_id"] = .string(id) }
        if let u = response.header("apns-unique-id") { extra["apns_unique_id"] = .string(u) }
        return .sent(device, extra: extra)
    }

    func blockedReason() -> FailureReason? {
        blocked.withLock { b in
            guard let x = b else { return nil }
            if monotonicNanos() >= x.until {
                b = nil
                return nil
            }
            return x.reason
        }
    }

    /// What every request of one send shares.
    struct Prepared: Sendable {
        var msg: APNsMessage
        /// The message's headers plus `authorization` (last) in token mode.
        var headers: [(String, String)]
        var jwt: String?
        /// The token's connection pool (0 in certificate mode).
        var pool: UInt32
    }

    /// Sends to one device, with retries; `first` is an answer already received for the first attempt.
    func sendOne(_ p: Prepared, _ device: Device, first: Result<HTTPResponse, TransportError>? = nil) async -> DeliveryResult {
        let token = device.registrationId
        guard Self.isValidToken(token) else { return .failed(device, Self.badToken, retryable: false) }
        var headers = p.headers
        var jwt = p.jwt
        var pool = p.pool
        let authIndex = headers.count - 1
        var pending = first
        var refreshedToken = false
        var movedPool = false
        var adoptedShared = false
        var attempt = 0
        /// Carries on with `lease` (a new, adopted or moved token): the earlier pool retired, the
        /// header replaced, the retry counted; `why` is logged when a pool was retired.
        func switchTo(_ lease: APNsTokenCache.Lease, _ c: APNsTokenCache.Credentials, _ err: APNsError, why: String) {
            if lease.retiredPool != nil {
                context.logger.notice("APNs key id \(c.keyId), team \(c.teamId): \(err.reason), \(why)")
            }
            retire(lease)
            jwt = lease.jwt
            pool = lease.pool
            headers[authIndex] = ("authorization", "bearer \(lease.jwt)")
            Metrics.shared.providerRetry(app: app, platform: .apns, reason: err.reason)
        }
        while true {
            attempt += 1
            let result: Result<HTTPResponse, TransportError>
            if let answer = pending {
                pending = nil
                result = answer
            } else {
                if let reason = blockedReason() { return .failed(device, reason, retryable: false) }
                result = await context.transport.perform(request(p.msg, device, headers: headers, pool: pool))
            }
            let response: HTTPResponse
            switch result {
            case .failure(let e):
                // Not processed by Apple (refused stream, GOAWAY, broken or refused connection): safe to resend.
                // A timeout may have been delivered: not resent here.
                if e.safeToResend && attempt < Self.maxAttempts {
                    Metrics.shared.providerRetry(app: app, platform: .apns, reason: e.protocolReason)
                    await Backoff.sleep(Backoff.delayMs(attempt: attempt, baseMs: 50, capMs: 2000))
                    continue
                }
                return .transportFailed(device, e, message: e.message.replacingToken(token))
            case .success(let r):
                response = r
            }
            if response.status == 200 { return Self.sentResult(device, response) }
            var extra = JSONObject()
            if let id = response.header("apns-id") { extra["apns_id"] = .string(id) }

            let eb = APNsErrorBody(response.body)
            let err = APNsError(reason: eb.reason ?? "HTTP \(response.status)")
            extra["apns_status"] = .int(Int64(response.status))

            if err == .expiredProviderToken, let c = credentials, let old = jwt, !refreshedToken {
                refreshedToken = true
                do {
                    let fresh = try await tokenCache.lease(
                        for: c, store: context.store, nowSeconds: nowMillis() / 1000, rejected: old)
                    switchTo(fresh, c, err, why: "new provider token on new connections")
                } catch {
                    if case .refreshTooSoon = error {
                        let reason = configurationReason(err, detail: "\(error)")
                        let failure = err.failure(reason)
                        blocked.withLock { $0 = (failure, monotonicNanos() + Self.blockNanos) }
                        context.logger.error("APNs app \(app): \(reason)")
                        return .failed(device, failure, retryable: false, extra: extra)
                    }
                    return .failed(device, .auth("cannot sign a new APNs provider token (key id \(c.keyId), team \(c.teamId)): \(error)"))
                }
                attempt -= 1
                continue
            }
            // Another daemon of the fleet holds the team's token (Apple allows one per team per
            // 20 minutes): adopt it, once per device.
            if err == .tooManyProviderTokenUpdates, let c = credentials, let old = jwt, !adoptedShared {
                adoptedShared = true
                if let shared = await tokenCache.adoptShared(
                    for: c, store: context.store, nowSeconds: nowMillis() / 1000, refused: old), shared.jwt != old
                {
                    switchTo(shared, c, err, why: "adopted the fleet's provider token")
                    attempt -= 1
                    continue
                }
            }
            // The connection refused our token because it saw another one lately (Apple ties the
            // 20-minute rule to the connection): the token moves to new connections, once per token.
            if err == .tooManyProviderTokenUpdates, let c = credentials, !movedPool,
                let moved = tokenCache.movePool(for: c, refusedPool: pool)
            {
                movedPool = true
                switchTo(moved, c, err, why: "provider token moved to new connections")
                attempt -= 1
                continue
            }
            if err.deactivatesDevice {
                return .failed(
                    device, err.failure(), retryable: false, deactivate: true,
                    invalidSince: response.status == 410 ? eb.timestamp : nil, extra: extra)
            }
            if response.status == 403 || err.isConfigurationError {
                let reason = configurationReason(err)
                let failure = err.failure(reason)
                blocked.withLock { $0 = (failure, monotonicNanos() + Self.blockNanos) }
                context.logger.error("APNs app \(app): \(reason)")
                return .failed(device, failure, retryable: false, extra: extra)
            }
            if response.status == 429 || response.status == 500 || response.status == 503 {
                if attempt < Self.maxAttempts {
                    Metrics.shared.providerRetry(app: app, platform: .apns, reason: err.reason)
                    await Backoff.sleep(Backoff.delayMs(attempt: attempt, retryAfterHeader: response.header("retry-after")))
                    continue
                }
                return .failed(device, err.failure(), retryable: true, extra: extra)
            }
            return .failed(device, err.failure(), retryable: false, extra: extra)
        }
    }


    static let badTokenReason = "BadDeviceToken: not a hexadecimal APNs token (not sent)"
    static let badToken = APNsError.badDeviceToken.failure(badTokenReason)

    /// A token we can put in a URL: hexadecimal, not empty (Apple judges the rest).
    static func isValidToken(_ t: String) -> Bool {
        !t.isEmpty && t.utf8.allSatisfy(APNsMessage.isHex)
    }

    /// The failure message of a 403: names the key id and team (token auth) or the certificate.
    func configurationReason(_ err: APNsError, detail: String? = nil) -> String {
        if let c = credentials {
            let hint =
                err != .expiredProviderToken ? ""
                : "; \(detail ?? "a token minted just now was found expired"): check the system clock"
            return "\(err.reason): Apple rejected the provider token of key id \(c.keyId), team \(c.teamId) (app \(app))\(hint)"
        }
        if case .certificate(let path, _) = config.auth {
            return "\(err.reason): Apple rejected the client certificate \(path) (app \(app))"
        }
        return err.reason
    }
}

extension String {
    /// This text with every occurrence of a device token shortened (messages never hold a full token).
    func replacingToken(_ token: String) -> String {
        guard !token.isEmpty, token.utf8.count <= utf8.count else { return self }
        let t = Array(token.utf8)
        let u = Array(utf8)
        var out: [UInt8] = []
        out.reserveCapacity(u.count)
        var i = 0
        while i < u.count {
            if i + t.count <= u.count && u[i..<(i + t.count)].elementsEqual(t) {
                out.append(contentsOf: redact(token).utf8)
                i += t.count
            } else {
                out.append(u[i])
                i += 1
            }
        }
        return String(decoding: out, as: UTF8.self)
    }
}
