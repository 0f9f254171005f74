import Logging

/// The WNS provider: Windows toast, tile, badge and raw notifications to channel URIs.
///
/// Authenticates with an OAuth client-credentials token (cached until near expiry, one
/// fetch at a time), POSTs each notification to the device's channel URI (its
/// `registrationId`) through the shared transport, and maps WNS answers to results:
///
/// | WNS answer                                   | result                                      |
/// |----------------------------------------------|---------------------------------------------|
/// | 200, `X-WNS-Status: received`                | `sent`                                      |
/// | 200, `dropped` / `channelthrottled`          | `failed`, retryable, reason = the status    |
/// | 404, 410                                     | `failed`, device deactivated                |
/// | 401                                          | token refreshed once, sent again            |
/// | 406, 429, 5xx, lost connections              | retried with backoff (`Retry-After` honoured)|
/// | 413                                          | `failed`, `payload_too_large`               |
///
/// `X-WNS-Status`, `X-WNS-Error-Description`, `X-WNS-Msg-ID` and
/// `X-WNS-DeviceConnectionStatus` go into the result as `wns_status`, `wns_error`,
/// `wns_msg_id` and `wns_device_status`.
public final class WNSProvider: PushProvider {
    public let platform: Platform = .wns
    let app: String
    let config: WNSConfig
    let context: ProviderContext
    let tls: TLSOptions
    let tokens: WNSTokenCache

    /// WNS refuses bodies over 5 KB.
    static let maxPayloadBytes = 5000
    /// Devices in flight at once for one `send`: as many as the transport's streams to one
    /// origin (2 loops x 1000), since each device's task also waits out its own retries' backoff
    /// in its slot (with 256, a send at 150 ms of latency was held to about 1,700 devices/s).
    static let fanoutWidth = 2000
    /// Tries per device for retryable answers (the first included).
    static let maxAttempts = 4
    /// A server asking to wait longer than this is not waited for: the result is a retryable failure.
    static let maxRetryDelayMs = 30_000

    public init(app: String, config: WNSConfig, context: ProviderContext) throws(ConfigError) {
        let path = "apps.\(app).wns"
        guard WebWNS.parseURL(config.tokenURL) != nil else { throw ConfigError(path + ".token_url", "expected an http(s) URL") }
        if let e = config.connection.endpoint, WebWNS.parseURL(e) == nil {
            throw ConfigError(path + ".endpoint", "expected an http(s) URL")
        }
        self.app = app
        self.config = config
        self.context = context
        tls = TLSOptions(caFile: config.connection.caFile, proxy: config.connection.proxy)
        tokens = WNSTokenCache(
            transport: context.transport, tokenURL: config.tokenURL, clientId: config.clientId,
            clientSecret: config.clientSecret, tls: tls, timeoutMs: config.connection.requestTimeoutMs, store: context.store)
    }

    public func validate(_ notification: PushNotification) throws(CommandError) {
        _ = try Self.buildMessage(notification)
    }

    public func send(_ notification: PushNotification, to devices: [Device]) async -> [DeliveryResult] {
        let message: WNSMessage
        do { message = try Self.buildMessage(notification) } catch {
            return devices.map { .failed($0, WebWNS.failure(error.message)) }
        }
        let dryRun = notification.dryRun
        return await Batches.map(devices, width: Self.fanoutWidth) { [self] d in
            await self.sendOne(message, to: d, dryRun: dryRun)
        }
    }

    // MARK: - Building the message

    /// What one notification becomes on the wire, the same for every device.
    struct WNSMessage: Sendable {
        /// `wns/toast`, `wns/tile`, `wns/badge` or `wns/raw`.
        var type: String
        var contentType: String
        var body: [UInt8]
        /// Extra `X-WNS-*` headers.
        var headers: [(String, String)]
    }

    /// The `wns` block's short names and the headers they stand for.
    static let headerNames: [String: String] = [
        "ttl": "X-WNS-TTL", "tag": "X-WNS-Tag", "group": "X-WNS-Group", "cache_policy": "X-WNS-Cache-Policy",
        "suppress_popup": "X-WNS-SuppressPopup", "request_for_status": "X-WNS-RequestForStatus",
        "priority": "X-WNS-PRIORITY",
    ]

    /// Builds the WNS request parts for `n`, or throws the client's mistake.
    ///
    /// A plain `message` becomes a toast:
    /// ```xml
    /// <toast><visual><binding template="ToastGeneric"><text>Title</text><text>Body</text></binding></visual></toast>
    /// ```
    static func buildMessage(_ n: PushNotification) throws(CommandError) -> WNSMessage {
        let f = n.fields
        var kind = "toast"
        if let t = f["wns_type"], !t.isNull {
            guard let s = t.stringValue, ["toast", "tile", "badge", "raw"].contains(s) else {
                throw .invalid("wns_type", "expected one of toast, tile, badge, raw")
            }
            kind = s
        }
        var payload: String?
        if let p = f["wns_payload"], !p.isNull {
            guard let s = p.stringValue, !s.isEmpty else { throw .invalid("wns_payload", "expected a non-empty string") }
            payload = s
        }
        let body: [UInt8]
        switch kind {
        case "raw":
            if let payload {
                body = Array(payload.utf8)
            } else {
                body = JSONValue.object(rawJSON(n)).serialized()
            }
        default:
            if let payload {
                guard xmlRoot(payload) == kind else {
                    throw .invalid("wns_payload", "expected XML whose root element is <\(kind)>")
                }
                body = Array(payload.utf8)
            } else {
                body = Array(try defaultXML(kind, n).utf8)
            }
        }
        guard body.count <= maxPayloadBytes else {
            throw CommandError(
                .payloadTooLarge, "WNS payload is \(body.count) bytes, the limit is \(maxPayloadBytes)",
                details: ["size": .int(Int64(body.count)), "limit": .int(Int64(maxPayloadBytes))])
        }

        var headers: [(String, String)] = []
        var given = Set<String>()
        if let w = f["wns"], !w.isNull {
            guard let wo = w.objectValue else { throw .invalid("wns", "expected an object of WNS headers") }
            for (k, v) in wo.pairs {
                let name: String
                if k.lowercased().hasPrefix("x-wns-") {
                    name = k
                } else if let h = headerNames[k] {
                    name = h
                } else {
                    throw .invalid("wns.\(k)", "unknown WNS header; use \(headerNames.keys.sorted().joined(separator: ", ")) or an X-WNS-* name")
                }
                let value: String
                switch v {
                case .string(let s): value = s
                case .int(let i): value = String(i)
                case .bool(let b): value = b ? "true" : "false"
                default: throw .invalid("wns.\(k)", "expected a string, integer or boolean")
                }
                guard WebWNS.isHeaderName(name) else {
                    throw .invalid("wns.\(k)", "not a valid header name (letters, digits and !#$%&'*+-.^_`|~)")
                }
                guard !value.isEmpty, WebWNS.isSafeHeaderValue(value) else {
                    throw .invalid("wns.\(k)", "not a valid header value")
                }
                given.insert(name.lowercased())
                headers.append((name, value))
            }
        }
        if !given.contains("x-wns-ttl"), let ttl = n.timeToLive {
            headers.append(("X-WNS-TTL", String(ttl)))
        }
        if !given.contains("x-wns-tag"), kind == "toast" || kind == "tile", let c = n.collapseId, !c.isEmpty,
            c.count <= 64, WebWNS.isSafeHeaderValue(c)
        {
            headers.append(("X-WNS-Tag", c))
        }
        if !given.contains("x-wns-priority"), kind == "toast" {
            switch n.priority {
            case .high?: headers.append(("X-WNS-PRIORITY", "1"))
            case .normal?: headers.append(("X-WNS-PRIORITY", "2"))
            default: break
            }
        }
        if !given.contains("x-wns-requestforstatus") {
            headers.append(("X-WNS-RequestForStatus", "true"))
        }
        return WNSMessage(
            type: "wns/" + kind, contentType: kind == "raw" ? "application/octet-stream" : "text/xml", body: body,
            headers: headers)
    }

    /// The root element name of an XML text (after an optional `<?xml ...?>` prolog and comments), or nil.
    static func xmlRoot(_ s: String) -> String? {
        var rest = Substring(s)
        while true {
            rest = rest.drop { $0 == " " || $0 == "\n" || $0 == "\r" || $0 == "\t" || $0 == "\u{FEFF}" }
            if rest.hasPrefix("<?") {
                guard let after = WebWNS.after("?>", in: rest) else { return nil }
                rest = after
            } else if rest.hasPrefix("<!--") {
                guard let after = WebWNS.after("-->", in: rest) else { return nil }
                rest = after
            } else {
                break
            }
        }
        guard rest.first == "<" else { return nil }
        let name = rest.dropFirst().prefix { $0.isLetter || $0.isNumber || $0 == "_" || $0 == "-" || $0 == ":" }
        guard !name.isEmpty, rest.hasSuffix(">") else { return nil }
        return String(name)
    }

    /// The toast, tile or badge XML for a notification without `wns_payload`.
    static func defaultXML(_ kind: String, _ n: PushNotification) throws(CommandError) -> String {
        switch kind {
        case "badge":
            guard let b = n.badge else {
                throw .invalid("badge", "a WNS badge notification needs `badge` or `wns_payload`")
            }
            return "<badge value=\"\(b)\"/>"
        case "tile":
            guard let body = n.bodyText else {
                throw .invalid("message", "a WNS tile notification needs `message` or `wns_payload`")
            }
            var texts = ""
            if let t = n.titleText { texts += "<text hint-style=\"subtitle\">\(WebWNS.xmlEscape(t))</text>" }
            texts += "<text hint-wrap=\"true\">\(WebWNS.xmlEscape(body))</text>"
            return "<tile><visual><binding template=\"TileMedium\">\(texts)</binding>"
                + "<binding template=\"TileWide\">\(texts)</binding></visual></tile>"
        default:
            guard let body = n.bodyText else {
                throw .invalid("message", "a WNS toast needs `message` (or `wns_type` and `wns_payload`)")
            }
            var xml = "<toast"
            if let e = n.extra, !e.isEmpty {
                // The app receives `extra` as the toast's launch arguments.
                xml += " launch=\"\(WebWNS.xmlEscape(JSONValue.object(e).jsonString))\""
            }
            xml += "><visual><binding template=\"ToastGeneric\">"
            if let t = n.titleText { xml += "<text>\(WebWNS.xmlEscape(t))</text>" }
            xml += "<text>\(WebWNS.xmlEscape(body))</text></binding></visual>"
            if case .string(let s)? = n.sound, s.hasPrefix("ms-winsoundevent:") || s.hasPrefix("ms-appx:") {
                xml += "<audio src=\"\(WebWNS.xmlEscape(s))\"/>"
            }
            return xml + "</toast>"
        }
    }

    /// The JSON body of a raw notification without `wns_payload`: title, message and extra fields.
    static func rawJSON(_ n: PushNotification) -> JSONObject {
        var o = JSONObject()
        if let t = n.titleText { o["title"] = .string(t) }
        if let b = n.bodyText { o["message"] = .string(b) }
        if let b = n.badge { o["badge"] = .int(Int64(b)) }
        if let e = n.extra {
            for (k, v) in e.pairs where o[k] == nil { o[k] = v }
        }
        return o
    }

    // MARK: - Sending

    /// The URL to POST to for a channel URI: it must be an absolute https URL
    /// (its origin replaced by the configured `endpoint`, if any).
    func channelURL(_ registrationId: String) -> String? {
        guard let u = WebWNS.parseURL(registrationId) else { return nil }
        if config.connection.endpoint == nil, u.scheme != "https" { return nil }
        guard let r = WebWNS.rewrite(u, endpoint: config.connection.endpoint) else { return nil }
        return r.origin + r.rest
    }

    /// Result members from WNS's response headers.
    static func extra(from resp: HTTPResponse) -> JSONObject {
        var e = JSONObject()
        if let s = resp.header("x-wns-status") { e["wns_status"] = .string(s) }
        if let s = resp.header("x-wns-error-description") { e["wns_error"] = .string(s) }
        if let s = resp.header("x-wns-msg-id") { e["wns_msg_id"] = .string(s) }
        if let s = resp.header("x-wns-deviceconnectionstatus") { e["wns_device_status"] = .string(s) }
        return e
    }

    func sendOne(_ m: WNSMessage, to d: Device, dryRun: Bool) async -> DeliveryResult {
        guard let url = channelURL(d.registrationId) else {
            return .failed(d, .invalidToken("invalid_channel_uri"))
        }
        if dryRun {
            // A dry run checks the credentials too: it gets (or reuses) a token, then stops.
            switch await tokens.token() {
            case .success: return .sent(d, extra: ["dry_run": true])
            case .failure(let f): return .failed(d, .auth(f.reason), retryable: f.retryable)
            }
        }
        var attempt = 1
        var refreshed = false
        var staleToken: String?
        while true {
            let token: String
            switch await tokens.token(invalidating: staleToken) {
            case .success(let t): token = t
            case .failure(let f): return .failed(d, .auth(f.reason), retryable: f.retryable)
            }
            staleToken = nil
            var headers: [(String, String)] = [
                ("authorization", "Bearer " + token), ("x-wns-type", m.type), ("content-type", m.contentType),
            ]
            headers.append(contentsOf: m.headers)
            let req = HTTPRequest(
                method: "POST", url: url, headers: headers, body: m.body, tls: tls,
                timeoutMs: config.connection.requestTimeoutMs, maxConnections: config.connection.maxConnections)
            let resp: HTTPResponse
            switch await context.transport.perform(req) {
            case .failure(let e):
                if e.safeToResend, attempt < Self.maxAttempts {
                    Metrics.shared.providerRetry(app: app, platform: .wns, reason: e.protocolReason)
                    await Backoff.sleep(Backoff.delayMs(attempt: attempt))
                    attempt += 1
                    continue
                }
                context.logger.debug("wns send to \(redact(d.registrationId)) failed: \(e)")
                return .transportFailed(d, e)
            case .success(let r): resp = r
            }
            var extra = Self.extra(from: resp)
            let status = resp.header("x-wns-status")?.lowercased()
            let desc = resp.header("x-wns-error-description")
            switch resp.status {
            case 200:
                if let status, status != "received" {
                    let retryable = status == "dropped" || status == "channelthrottled"
                    return .failed(d, WebWNS.failure(status), retryable: retryable, extra: extra)
                }
                return .sent(d, extra: extra)
            case 401 where !refreshed:
                // The token expired or was revoked: fetch a new one once and send again.
                refreshed = true
                staleToken = token
                Metrics.shared.providerRetry(app: app, platform: .wns, reason: "unauthorized")
                continue
            case 401:
                return .failed(d, .auth("unauthorized" + (desc.map { ": " + $0 } ?? "")), extra: extra)
            case 404:
                return .failed(d, .invalidToken("not_found"), deactivate: true, extra: extra)
            case 410:
                return .failed(d, .invalidToken("channel_expired"), deactivate: true, extra: extra)
            case 413:
                return .failed(d, .badRequest("payload_too_large"), extra: extra)
            case 406, 429, 500...599:
                if let wait = Backoff.retryWait(after: resp, attempt: attempt, maxAttempts: Self.maxAttempts, maxWaitMs: Self.maxRetryDelayMs) {
                    Metrics.shared.providerRetry(
                        app: app, platform: .wns, reason: resp.status == 406 || resp.status == 429 ? (status ?? "throttled") : "http_\(resp.status)")
                    await Backoff.sleep(wait)
                    attempt += 1
                    continue
                }
                if let ra = RetryAfter.seconds(resp.header("retry-after")) { extra["retry_after_ms"] = .int(Int64(ra) * 1000) }
                let reason = resp.status == 406 || resp.status == 429 ? (status ?? "throttled") : "http_\(resp.status)"
                return .failed(d, WebWNS.failure(reason), retryable: true, extra: extra)
            case 400:
                return .failed(d, .badRequest("bad_request" + (desc.map { ": " + $0 } ?? "")), extra: extra)
            case 403:
                return .failed(d, .auth("forbidden" + (desc.map { ": " + $0 } ?? "")), extra: extra)
            default:
                return .failed(d, WebWNS.failure("http_\(resp.status)" + (desc.map { ": " + $0 } ?? "")), extra: extra)
            }
        }
    }
}

/// Why no WNS access token could be had.
struct WNSTokenFailure: Error, Sendable {
    var reason: String
    var retryable: Bool
}

/// The WNS OAuth access token: fetched with the client credentials, cached until a
/// minute before it expires, one fetch at a time however many sends wait for it.
///
/// Shared through the registry's key-value store (`SharedAccessTokens`, key `wns.oauth.<first
/// 16 hex digits of SHA-256(client id, token URL)>`, so no client id is written out): a fleet of
/// daemons on one database, or a restarted daemon, uses the client's stored token while it has
/// more than a minute left, and one daemon at a time fetches the next.
actor WNSTokenCache {
    struct Token: Sendable {
        var value: String
        var expiresAtMs: Int64
        var issuedAtMs: Int64 = nowMillis()
    }
    let transport: any HTTPClient
    let tokenURL: String
    let form: [UInt8]
    let tls: TLSOptions
    let timeoutMs: Int
    let clientIdPrefix: String
    let store: (any KeyValueStore)?
    let storeKey: String
    private var current: Token?
    private var inflight: Task<Result<Token, WNSTokenFailure>, Never>?
    /// Token fetches made (tests).
    private(set) var fetches = 0

    init(
        transport: any HTTPClient, tokenURL: String, clientId: String, clientSecret: String, tls: TLSOptions, timeoutMs: Int,
        store: (any KeyValueStore)? = nil
    ) {
        self.store = store
        storeKey = "wns.oauth." + Digest.sha256(Array("\(clientId)\n\(tokenURL)".utf8)).prefix(8).map { WebWNS.hex2($0) }.joined()
        self.transport = transport
        self.tokenURL = tokenURL
        form = Array(
            ("grant_type=client_credentials&client_id=\(WebWNS.formEncode(clientId))"
                + "&client_secret=\(WebWNS.formEncode(clientSecret))&scope=notify.windows.com").utf8)
        self.tls = tls
        self.timeoutMs = timeoutMs
        clientIdPrefix = redact(clientId)
    }

    /// A valid token; `invalidating` is a token the service refused (401): if it is
    /// still the cached one, it is dropped and a new one fetched.
    func token(invalidating stale: String? = nil) async -> Result<String, WNSTokenFailure> {
        if let stale, current?.value == stale { current = nil }
        if let c = current, c.expiresAtMs - 60_000 > nowMillis() { return .success(c.value) }
        if let t = inflight { return await t.value.map(\.value) }
        let t = Task { await self.shared(stale: stale) }
        inflight = t
        let r = await t.value
        inflight = nil
        if case .success(let tok) = r { current = tok }
        return r.map(\.value)
    }

    /// The fleet's stored token if it has more than a minute left (and is not `stale`), else a fetched one.
    private func shared(stale: String?) async -> Result<Token, WNSTokenFailure> {
        guard let store else { return await fetch() }
        let timeoutMs = timeoutMs
        let r = await SharedAccessTokens.obtain(
            store: store, key: storeKey, stale: stale, claimMs: 3 * timeoutMs + 5000,
            fresh: { t, now in t.expiresAtMs - 60_000 > now }, valid: { t, now in t.expiresAtMs - 60_000 > now }
        ) { () async -> Result<SharedAccessToken, WNSTokenFailure> in
            await self.fetch().map { SharedAccessToken(value: $0.value, issuedAtMs: $0.issuedAtMs, expiresAtMs: $0.expiresAtMs) }
        }
        return r.result.map { Token(value: $0.value, expiresAtMs: $0.expiresAtMs, issuedAtMs: $0.issuedAtMs) }
    }

    private func fetch() async -> Result<Token, WNSTokenFailure> {
        fetches += 1
        let req = HTTPRequest(
            method: "POST", url: tokenURL, headers: [("content-type", "application/x-www-form-urlencoded")], body: form,
            tls: tls, timeoutMs: timeoutMs, maxConnections: 1)  // One token request at a time: one connection.
        var attempt = 1
        while true {
            switch await transport.perform(req) {
            case .failure(let e):
                if e.safeToResend || e.kind == .timeout, attempt < 3 {
                    await Backoff.sleep(Backoff.delayMs(attempt: attempt))
                    attempt += 1
                    continue
                }
                return .failure(WNSTokenFailure(reason: "token_error: \(e.protocolReason): \(e.message)", retryable: e.retryable))
            case .success(let r):
                if r.status == 200, let v = try? JSONValue.parse(r.body), let tok = v["access_token"]?.stringValue, !tok.isEmpty {
                    let ttl = v["expires_in"]?.intValue ?? 86_400
                    return .success(Token(value: tok, expiresAtMs: nowMillis() + max(0, ttl) * 1000))
                }
                if r.status >= 500 || r.status == 429, attempt < 3 {
                    await Backoff.sleep(Backoff.delayMs(attempt: attempt, retryAfterHeader: r.header("retry-after"), floorMs: 0))
                    attempt += 1
                    continue
                }
                let why = r.status == 200 ? "no access_token in the answer" : "HTTP \(r.status): \(WebWNS.bodyExcerpt(r.body))"
                return .failure(
                    WNSTokenFailure(
                        reason: "token_error: \(why) (client \(clientIdPrefix))", retryable: r.status >= 500 || r.status == 429))
            }
        }
    }
}
