import Logging
import Synchronization

/// The WebPush provider: RFC 8030 push with RFC 8291 payload encryption and RFC 8292 VAPID.
///
/// Each device is a browser subscription: `registrationId` is the push service endpoint
/// URL (or, as django-push-notifications' JavaScript registers it, only the last path
/// segment, completed from the device's `browser`), `p256dh` and `auth` its keys
/// (base64url or standard base64). For every device the payload is encrypted with a
/// fresh ephemeral key (aes128gcm, one record) and POSTed with
/// `Authorization: vapid t=<JWT>, k=<public key>`; the JWT is cached per push-service
/// origin for 12 h (renewed an hour before expiry), the subscriber key parsed once and cached.
///
/// | push service answer | result                                   |
/// |---------------------|------------------------------------------|
/// | 200, 201, 202       | `sent`                                   |
/// | 404, 410            | `failed`, device deactivated             |
/// | 413                 | `failed`, `payload_too_large`            |
/// | 429, 5xx, lost conn.| retried with backoff (`Retry-After`)     |
/// | 400, 401, 403, ...  | `failed` with the service's message      |
///
/// The payload the service worker gets (`event.data.json()`) is
/// `{"title": ..., "message": ..., "body": ..., "tag": ..., "icon": ..., "url": ..., <extra fields>}`,
/// or the raw `payload` string.
public final class WebPushProvider: PushProvider {
    public let platform: Platform = .webpush
    let app: String
    let config: WebPushConfig
    let context: ProviderContext
    let tls: TLSOptions
    let vapidKey: ECPrivateKey
    /// base64url of the VAPID public key (the `k=` of the Authorization header, the browser's applicationServerKey).
    public let applicationServerKey: String
    private let jwts = Mutex<[String: VAPIDToken]>([:])
    private let subscriberKeys = Mutex<[String: SubscriberKeys]>([:])

    /// The largest encrypted body push services must accept (RFC 8030 section 7.2).
    public static let maxBodyBytes = 4096
    /// Bytes encryption adds to a plaintext: header (16 salt + 4 rs + 1 idlen + 65 key), delimiter, GCM tag.
    static let encryptionOverhead = 86 + 1 + 16
    static let fanoutWidth = 512
    static let maxAttempts = 4
    static let maxRetryDelayMs = 30_000
    /// VAPID JWT lifetime (RFC 8292 allows at most 24 h) and how long before expiry it is renewed.
    static let jwtLifetimeSeconds: Int64 = 12 * 3600
    static let jwtRenewSeconds: Int64 = 3600
    /// Cached subscriber keys before the cache is emptied.
    static let maxCachedKeys = 200_000

    /// Push service endpoints by browser, for subscriptions registered by their last path
    /// segment only (django-push-notifications' `WP_POST_URL` defaults).
    public static let browserEndpoints: [String: String] = [
        "CHROME": "https://fcm.googleapis.com/fcm/send/", "OPERA": "https://fcm.googleapis.com/fcm/send/",
        "EDGE": "https://wns2-par02p.notify.windows.com/w/", "FIREFOX": "https://updates.push.services.mozilla.com/wpush/v2/",
    ]

    struct VAPIDToken {
        var header: String
        var expiresAt: Int64
    }

    /// A subscription's parsed keys.
    struct SubscriberKeys: Sendable {
        var publicKey: P256PublicKey
        var auth: [UInt8]
    }

    public init(app: String, config: WebPushConfig, context: ProviderContext) throws(ConfigError) {
        let path = "apps.\(app).webpush"
        guard let pem = readFile(config.vapidPrivateKeyPath) else {
            throw ConfigError(path + ".vapid_private_key_path", "cannot read '\(config.vapidPrivateKeyPath)'")
        }
        do {
            vapidKey = try ECPrivateKey(pem: pem)
        } catch {
            throw ConfigError(path + ".vapid_private_key_path", "not a P-256 private key: \(error)")
        }
        if let e = config.connection.endpoint, WebWNS.parseURL(e) == nil {
            throw ConfigError(path + ".endpoint", "expected an http(s) URL")
        }
        applicationServerKey = Base64URL.encode(vapidKey.publicKeyUncompressed)
        self.app = app
        self.config = config
        self.context = context
        tls = TLSOptions(caFile: config.connection.caFile, proxy: config.connection.proxy)
    }

    // MARK: - What is sent

    /// What one notification becomes, the same for every subscription.
    struct Prepared: Sendable {
        var plaintext: [UInt8]
        /// TTL, Urgency, Topic and the `webpush.headers`.
        var headers: [(String, String)]
    }

    public func validate(_ notification: PushNotification) throws(CommandError) {
        _ = try prepare(notification)
    }

    func prepare(_ n: PushNotification) throws(CommandError) -> Prepared {
        let plaintext = try Self.payload(n)
        let size = plaintext.count + Self.encryptionOverhead
        guard size <= Self.maxBodyBytes else {
            throw CommandError(
                .payloadTooLarge, "WebPush payload is \(size) bytes encrypted, the limit is \(Self.maxBodyBytes)",
                details: ["size": .int(Int64(size)), "limit": .int(Int64(Self.maxBodyBytes))])
        }
        return Prepared(plaintext: plaintext, headers: try Self.headers(n, defaultTTL: config.ttl, now: nowMillis() / 1000))
    }

    /// The plaintext a service worker receives: the raw `payload`, or the notification's JSON.
    ///
    /// ```swift
    /// // {"message": "Hi", "title": "T", "extra": {"k": 1}, "tag": "t1"}
    /// // -> {"title":"T","message":"Hi","body":"Hi","tag":"t1","k":1}
    /// ```
    static func payload(_ n: PushNotification) throws(CommandError) -> [UInt8] {
        let f = n.fields
        if let p = f["payload"], !p.isNull {
            switch p {
            case .string(let s): return Array(s.utf8)
            case .object, .array: return p.serialized()
            default: throw .invalid("payload", "expected a string or a JSON object")
            }
        }
        var o = JSONObject()
        if let t = n.titleText { o["title"] = .string(t) }
        if let b = n.bodyText {
            o["message"] = .string(b)
            o["body"] = .string(b)
        }
        for k in ["tag", "icon", "image", "url"] {
            if let v = f[k], !v.isNull {
                guard case .string = v else { throw .invalid(k, "expected a string, got \(v.typeName)") }
                o[k] = v
            }
        }
        if let b = n.badge { o["badge"] = .int(Int64(b)) }
        if case .string(let s)? = n.sound { o["sound"] = .string(s) }
        if let e = n.extra {
            for (k, v) in e.pairs where o[k] == nil { o[k] = v }
        }
        return JSONValue.object(o).serialized()
    }

    static let urgencies: Set<String> = ["very-low", "low", "normal", "high"]

    /// Whether `s` is a valid RFC 8030 `Topic`: 1 to 32 characters of the base64url alphabet.
    static func isValidTopic(_ s: String) -> Bool {
        !s.isEmpty && s.utf8.count <= 32
            && s.utf8.allSatisfy {
                ($0 >= 0x41 && $0 <= 0x5A) || ($0 >= 0x61 && $0 <= 0x7A) || ($0 >= 0x30 && $0 <= 0x39) || $0 == 0x2D || $0 == 0x5F
            }
    }

    /// TTL, Urgency and Topic headers (and `webpush.headers`), `now` in Unix seconds.
    static func headers(_ n: PushNotification, defaultTTL: Int, now: Int64) throws(CommandError) -> [(String, String)] {
        let f = n.fields
        var h: [(String, String)] = []
        let ttl: Int64
        if let t = n.timeToLive {
            ttl = t
        } else if let e = n.expiration {
            ttl = max(0, e - now)
        } else {
            ttl = Int64(defaultTTL)
        }
        h.append(("ttl", String(ttl)))

        if let u = f["urgency"], !u.isNull {
            guard let s = u.stringValue, urgencies.contains(s) else {
                throw .invalid("urgency", "expected one of very-low, low, normal, high")
            }
            h.append(("urgency", s))
        } else {
            switch n.priority {
            case .high?: h.append(("urgency", "high"))
            case .normal?: h.append(("urgency", "normal"))
            case .low?: h.append(("urgency", "low"))
            case nil: break
            }
        }

        if let t = f["webpush_topic"], !t.isNull {
            guard let s = t.stringValue, isValidTopic(s) else {
                throw .invalid("webpush_topic", "expected 1 to 32 characters of the base64url alphabet (A-Z a-z 0-9 - _)")
            }
            h.append(("topic", s))
        } else if let c = n.collapseId, !c.isEmpty {
            // A collapse id that is not a valid Topic still collapses: its hash is.
            h.append(("topic", isValidTopic(c) ? c : String(Base64URL.encode(Digest.sha256(Array(c.utf8))).prefix(32))))
        }

        if let w = f["webpush"], !w.isNull {
            guard let wo = w.objectValue else { throw .invalid("webpush", "expected an object") }
            for (k, v) in wo.pairs {
                guard k == "headers" else { throw .invalid("webpush.\(k)", "unknown key; only `headers` is read") }
                guard let ho = v.objectValue else { throw .invalid("webpush.headers", "expected an object of header names to strings") }
                for (name, value) in ho.pairs {
                    guard let s = value.stringValue, WebWNS.isSafeHeaderValue(s), WebWNS.isHeaderName(name) else { throw .invalid("webpush.headers.\(name)", "expected a header name and a string value") }
                    let lower = name.lowercased()
                    guard !["authorization", "content-encoding", "content-type", "content-length"].contains(lower) else {
                        throw .invalid("webpush.headers.\(name)", "this header is set by Pushline")
                    }
                    h.removeAll { $0.0 == lower }
                    h.append((lower, s))
                }
            }
        }
        return h
    }

    // MARK: - VAPID

    /// The `Authorization` header for a push service origin, from the cache or newly signed.
    func authorization(origin: String, now: Int64) throws(CryptoError) -> String {
        if let t = jwts.withLock({ $0[origin] }), t.expiresAt - Self.jwtRenewSeconds > now { return t.header }
        let exp = now + Self.jwtLifetimeSeconds
        let jwt = try Self.vapidJWT(origin: origin, subject: config.subject, expiresAt: exp, key: vapidKey)
        let header = "vapid t=\(jwt), k=\(applicationServerKey)"
        jwts.withLock { $0[origin] = VAPIDToken(header: header, expiresAt: exp) }
        return header
    }

    /// An RFC 8292 VAPID JWT: `{"typ":"JWT","alg":"ES256"}.{"aud":origin,"exp":...,"sub":subject}`.
    static func vapidJWT(origin: String, subject: String, expiresAt: Int64, key: ECPrivateKey) throws(CryptoError) -> String {
        try JWT.es256(
            header: ["typ": "JWT", "alg": "ES256"],
            claims: ["aud": .string(origin), "exp": .int(expiresAt), "sub": .string(subject)], key: key)
    }

    // MARK: - Subscriptions

    /// The URL to POST to for a subscription, or nil if it has none.
    func endpointURL(_ d: Device) -> WebWNS.URLParts? {
        var u = WebWNS.parseURL(d.registrationId)
        if u == nil {
            // django-push-notifications registers only the endpoint's last path segment.
            guard let b = d.browser?.uppercased(), let base = Self.browserEndpoints[b],
                !d.registrationId.isEmpty, !d.registrationId.contains("/")
            else { return nil }
            u = WebWNS.parseURL(base + d.registrationId)
        }
        guard let parsed = u else { return nil }
        if config.connection.endpoint == nil, parsed.scheme != "https" { return nil }
        return WebWNS.rewrite(parsed, endpoint: config.connection.endpoint)
    }

    /// Decodes a key the way browsers and the django JavaScript give it: base64url or standard base64.
    static func decodeKey(_ s: String) -> [UInt8]? {
        var t = ""
        t.reserveCapacity(s.utf8.count)
        for c in s.unicodeScalars {
            switch c {
            case "+": t += "-"
            case "/": t += "_"
            case "=", " ", "\n", "\r": continue
            default: t.unicodeScalars.append(c)
            }
        }
        return Base64URL.decode(t)
    }

    /// The subscription's parsed keys, cached by device id and `p256dh`.
    func keys(_ d: Device) -> SubscriberKeys? {
        guard let p = d.p256dh, let a = d.auth else { return nil }
        let cacheKey = "\(d.id)|\(p)|\(a)"
        if let k = subscriberKeys.withLock({ $0[cacheKey] }) { return k }
        guard let point = Self.decodeKey(p), point.count == 65, let auth = Self.decodeKey(a), auth.count == 16,
            let pk = try? P256PublicKey(uncompressed: point)
        else { return nil }
        let k = SubscriberKeys(publicKey: pk, auth: auth)
        subscriberKeys.withLock {
            if $0.count >= Self.maxCachedKeys { $0.removeAll(keepingCapacity: true) }
            $0[cacheKey] = k
        }
        return k
    }

    // MARK: - Sending

    public func send(_ notification: PushNotification, to devices: [Device]) async -> [DeliveryResult] {
        let prepared: Prepared
        do { prepared = try prepare(notification) } catch {
            return devices.map { .failed($0, WebWNS.failure(error.message)) }
        }
        let dryRun = notification.dryRun
        if devices.count <= 1 || dryRun {
            return await Batches.map(devices, width: Self.fanoutWidth) { [self] d in
                await self.sendOne(prepared, to: d, dryRun: dryRun)
            }
        }
        // Large sends go to the transport in batches (one suspension per batch, not per device),
        // two batches in flight: one is encrypted while the other is on the wire. Only answers
        // that need another look (retries) get a task of their own.
        let results = await Batches.run(count: devices.count, batchSize: Self.batchSize) { range in
            await self.sendBatch(prepared, devices, range)
        }
        return zip(devices, results).map { d, r in r ?? .failed(d, .internalError("internal: no result"), retryable: true) }
    }

    /// Requests in one `performAll` batch.
    static let batchSize = 500

    /// Encrypts and sends `devices[range]` in one transport batch; 2xx answers are mapped at once,
    /// the others go to `deliver` seeded with the answer.
    func sendBatch(_ p: Prepared, _ devices: [Device], _ range: Range<Int>) async -> Batches.Outcome<DeliveryResult> {
        let (done, retry) = await BulkSend.perform(
            range, on: context.transport,
            build: { i in
                switch request(p, for: devices[i]) {
                case .success(let r): return .request(r)
                case .failure(let failed): return .result(failed.result)
                }
            }, accepted: { (200...202).contains($0.status) }, sent: { i, r in Self.sentResult(devices[i], r) })
        return Batches.outcome(done, retrying: retry) { i, req, first in (i, await self.deliver(req, to: devices[i], first: first)) }
    }

    /// A device's result that needs no request (bad subscription, encryption failure).
    struct Unsendable: Error {
        var result: DeliveryResult
    }

    /// The encrypted, VAPID-signed request for one subscription.
    func request(_ p: Prepared, for d: Device) -> Result<HTTPRequest, Unsendable> {
        guard let url = endpointURL(d) else {
            return .failure(Unsendable(result: .failed(d, .invalidToken("invalid_subscription: registration_id is not an https push endpoint URL"))))
        }
        guard let keys = keys(d) else {
            return .failure(Unsendable(result: .failed(
                d, .invalidToken("invalid_subscription: p256dh must be a P-256 point and auth 16 bytes (base64url)"))))
        }
        let body: [UInt8]
        let auth: String
        do {
            body = try WebPushCrypto.encrypt(p.plaintext, to: keys.publicKey, authSecret: keys.auth)
            auth = try authorization(origin: url.origin, now: nowMillis() / 1000)
        } catch {
            context.logger.error("webpush encryption for \(redact(d.registrationId)) failed: \(error)")
            return .failure(Unsendable(result: .failed(d, .badRequest("encryption_failed: \(error)"))))
        }
        var headers: [(String, String)] = [
            ("authorization", auth), ("content-encoding", "aes128gcm"), ("content-type", "application/octet-stream"),
        ]
        headers.append(contentsOf: p.headers)
        return .success(HTTPRequest(
            method: "POST", url: url.origin + url.rest, headers: headers, body: body, tls: tls,
            timeoutMs: config.connection.requestTimeoutMs, maxConnections: config.connection.maxConnections))
    }

    /// The result of a 2xx answer.
    static func sentResult(_ d: Device, _ resp: HTTPResponse) -> DeliveryResult {
        var extra = JSONObject()
        if let loc = resp.header("location") { extra["location"] = .string(loc) }
        return .sent(d, extra: extra)
    }

    func sendOne(_ p: Prepared, to d: Device, dryRun: Bool) async -> DeliveryResult {
        switch request(p, for: d) {
        case .failure(let failed): return failed.result
        case .success(let req):
            if dryRun { return .sent(d, extra: ["dry_run": true]) }
            return await deliver(req, to: d)
        }
    }

    /// Sends one request with retries; `first` is an answer already received for the first attempt.
    func deliver(_ req: HTTPRequest, to d: Device, first: Result<HTTPResponse, TransportError>? = nil) async -> DeliveryResult {
        var pending = first
        var attempt = 1
        while true {
            let answer: Result<HTTPResponse, TransportError>
            if let p = pending {
                pending = nil
                answer = p
            } else {
                answer = await context.transport.perform(req)
            }
            let resp: HTTPResponse
            switch answer {
            case .failure(let e):
                if e.safeToResend, attempt < Self.maxAttempts {
                    Metrics.shared.providerRetry(app: app, platform: .webpush, reason: e.protocolReason)
                    await Backoff.sleep(Backoff.delayMs(attempt: attempt))
                    attempt += 1
                    continue
                }
                context.logger.debug("webpush send to \(redact(d.registrationId)) failed: \(e)")
                return .transportFailed(d, e)
            case .success(let r): resp = r
            }
            var extra = JSONObject()
            if let loc = resp.header("location") { extra["location"] = .string(loc) }
            switch resp.status {
            case 200, 201, 202:
                return Self.sentResult(d, resp)
            case 404:
                return .failed(d, .invalidToken("not_found"), deactivate: true, extra: extra)
            case 410:
                return .failed(d, .invalidToken("gone"), deactivate: true, extra: extra)
            case 413:
                return .failed(d, .badRequest("payload_too_large"), extra: extra)
            case 429, 500...599:
                if let wait = Backoff.retryWait(after: resp, attempt: attempt, maxAttempts: Self.maxAttempts, maxWaitMs: Self.maxRetryDelayMs) {
                    Metrics.shared.providerRetry(app: app, platform: .webpush, reason: resp.status == 429 ? "too_many_requests" : "http_\(resp.status)")
                    await Backoff.sleep(wait)
                    attempt += 1
                    continue
                }
                if let ra = RetryAfter.seconds(resp.header("retry-after")) { extra["retry_after_ms"] = .int(Int64(ra) * 1000) }
                return .failed(d, resp.status == 429 ? .rateLimited("too_many_requests") : WebWNS.failure("http_\(resp.status)"), retryable: true, extra: extra)
            case 400:
                return .failed(d, .badRequest("bad_request: " + WebWNS.bodyExcerpt(resp.body)), extra: extra)
            case 401:
                return .failed(d, .auth("unauthorized: " + WebWNS.bodyExcerpt(resp.body)), extra: extra)
            case 403:
                return .failed(d, .auth("forbidden: " + WebWNS.bodyExcerpt(resp.body)), extra: extra)
            default:
                return .failed(d, WebWNS.failure("http_\(resp.status): " + WebWNS.bodyExcerpt(resp.body)), extra: extra)
            }
        }
    }
}
