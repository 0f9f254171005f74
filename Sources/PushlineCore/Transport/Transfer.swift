import CCurl
import CPushlineShims
import Glibc

/// What a loop's transfers tell it during a curl_multi_perform pass: the pass's number, and the
/// transfers whose response's header block arrived before libcurl had sent all of the request
/// body (see `Transfer.answeredBeforeBodySent`, `EventLoop.settleEarlyAnswers`). Confined to the
/// loop's thread.
final class LoopPass {
    var number: UInt64 = 0
    var earlyAnswers: [Transfer] = []
}

/// One reusable libcurl easy handle with its header list, body copy and response buffers.
///
/// Not Sendable: owned by one `EventLoop` and used on its thread only.
final class Transfer {
    let easy: UnsafeMutableRawPointer
    private var headerList: UnsafeMutablePointer<curl_slist>?
    /// The request's own leading headers (`HTTPRequest.uniqueLeadingHeaders`) that do not fit
    /// `inlineNodes`/`inlineText`: nodes allocated here (not by curl_slist_append), each `data`
    /// a strdup, the last one's `next` the kept `headerList`. Freed node by node, never with
    /// curl_slist_free_all (which would free the kept list too).
    private var leadingHead: UnsafeMutablePointer<curl_slist>?
    private var leadingCount = 0
    /// Where leading headers that fit go instead (the usual case: one `apns-id`): nodes and
    /// text of this handle's own, written again for every request, so a leading header costs
    /// no allocation on the loop thread (three a request before: the line, its strdup, the node).
    private let inlineNodes: UnsafeMutablePointer<curl_slist>
    private let inlineText: UnsafeMutablePointer<CChar>
    static let inlineNodeCount = 2
    static let inlineTextBytes = 256
    /// The list CURLOPT_HTTPHEADER was last set to (nil after curl_easy_reset).
    private var appliedHeaderList: UnsafeMutablePointer<curl_slist>?
    private let errorBuffer: UnsafeMutablePointer<CChar>
    /// The request body; libcurl reads it in place (CURLOPT_POSTFIELDS) until the transfer ends.
    private var bodyStorage: UnsafeMutableRawPointer
    private var bodyCapacity: Int
    /// The request body's length.
    private var bodyCount = 0
    private var maxResponseBytes = 0
    /// What the handle is configured for (see `prepare`); the header list is kept for reuse.
    private var configured = false
    private var lastMethod = ""
    private var lastTLS = TLSOptions()
    private var lastHeaders: [(String, String)] = []
    /// CURLOPT_ADDRESS_SCOPE and CURLOPT_FORBID_REUSE as last set (see `selectPool`).
    fileprivate var lastPool: UInt32 = 0
    fileprivate var reuseForbidden = false

    /// The job being served, its origin queue and its index in the loop's active list.
    var job: TransportJob?
    var queue: OriginQueue?
    var slot = -1
    /// When the transfer was (last) added to the multi handle, and how often `EventLoop.watchActive` restarted it.
    var attachedAt: UInt64 = 0
    var restarts = 0

    /// Response so far.
    var status = 0
    var gotResponse = false
    /// The header block of a final (non-1xx) response ended: libcurl passed its blank line.
    var headersDone = false
    /// When `headersDone` was set (CLOCK_MONOTONIC ns, and the loop's pass), and how often `nudge` ran since.
    var headersDoneAt: UInt64 = 0
    var headersDonePass: UInt64 = 0
    var nudges = 0
    /// The header block ended before libcurl had sent the whole request body (see `LoopPass`).
    var answeredBeforeBodySent = false
    var tooLarge = false
    /// Response headers in `HTTPResponse.rawHeaders` form.
    var headers: [UInt8] = []
    var body: [UInt8] = []

    /// CURLOPT_BUFFERSIZE: the most libcurl hands to the write callback at once.
    static let receiveBufferSize = 4096

    /// The loop's open connections (see `ConnectionLedger`): sockets this handle opens are counted there.
    let ledger: ConnectionLedger
    let pass: LoopPass

    init(ledger: ConnectionLedger, pass: LoopPass) throws(TransportError) {
        self.ledger = ledger
        self.pass = pass
        guard let e = curl_easy_init() else {
            throw TransportError(.unavailable, "curl_easy_init failed")
        }
        easy = e
        errorBuffer = .allocate(capacity: Int(CURL_ERROR_SIZE) + 1)
        errorBuffer.initialize(repeating: 0, count: Int(CURL_ERROR_SIZE) + 1)
        bodyCapacity = 1024
        bodyStorage = .allocate(byteCount: bodyCapacity, alignment: 16)
        inlineNodes = .allocate(capacity: Self.inlineNodeCount)
        inlineNodes.initialize(repeating: curl_slist(data: nil, next: nil), count: Self.inlineNodeCount)
        inlineText = .allocate(capacity: Self.inlineTextBytes)
        inlineText.initialize(repeating: 0, count: Self.inlineTextBytes)
    }

    deinit {
        freeLeadingNodes()
        curl_slist_free_all(headerList)
        curl_easy_cleanup(easy)
        errorBuffer.deallocate()
        bodyStorage.deallocate()
        inlineNodes.deallocate()
        inlineText.deallocate()
    }

    /// Forgets the previous request and response (options and header list stay for reuse).
    func clear() {
        job = nil
        queue = nil
        restarts = 0
        status = 0
        gotResponse = false
        headersDone = false
        headersDoneAt = 0
        nudges = 0
        answeredBeforeBodySent = false
        tooLarge = false
        headers = []
        body = []
    }

    /// Sets the easy handle up for `job`.
    ///
    /// A handle last used with the same method and TLS options keeps its options (and its header
    /// list if the headers are equal): only URL, deadline and body are set again. Otherwise it is
    /// reset (curl_easy_reset) and fully configured. After a failed `prepare` the next one resets.
    func prepare(_ job: TransportJob, remainingMs: Int, options: TransportOptions) throws(TransportError) {
        errorBuffer[0] = 0
        self.job = job
        maxResponseBytes = options.maxResponseBytes
        let request = job.request
        let reuse = configured && request.method == lastMethod && request.tls == lastTLS
        configured = false
        if !reuse {
            curl_easy_reset(easy)
            freeHeaderList()
            try configure(request, options: options)
            lastMethod = request.method
            lastTLS = request.tls
        }
        try selectPool(request.connectionPool, afterReset: !reuse)
        try setString(CURLOPT_URL, request.url, "CURLOPT_URL")
        try setLong(CURLOPT_TIMEOUT_MS, remainingMs, "CURLOPT_TIMEOUT_MS")
        try setLong(CURLOPT_CONNECTTIMEOUT_MS, min(remainingMs, 10_000), "CURLOPT_CONNECTTIMEOUT_MS")
        switch request.method {
        case "GET", "HEAD":
            break
        case "POST", "PUT", "PATCH":
            try setBody(request.body)
        default:
            if !request.body.isEmpty {
                try setBody(request.body)
            } else {
                try setLong(CURLOPT_HTTPGET, 1, "CURLOPT_HTTPGET")  // No body: drop an earlier POSTFIELDS.
                try setString(CURLOPT_CUSTOMREQUEST, request.method, "CURLOPT_CUSTOMREQUEST")
            }
        }
        // The request's own leading headers (an outbox delivery's `apns-id`) go in nodes of their
        // own ahead of the kept list of the others, so a header that differs at every request
        // does not make the whole list be built again (issue 13: 5-9 µs a request on the
        // transport threads, measured with and without the outbox's apns-id).
        let unique = min(max(0, request.uniqueLeadingHeaders), request.headers.count)
        let shared = request.headers[unique...]
        if headerList == nil || !sameHeaders(shared, lastHeaders) {
            freeHeaderList()
            var list: UnsafeMutablePointer<curl_slist>?
            // "name;" sends a header with an empty value; "name:" would remove it.
            var lines = shared.map { name, value in value.isEmpty ? name + ";" : name + ": " + value }
            // libcurl's own defaults, removed ("name:" with nothing after the colon) unless the
            // caller set them: `Accept: */*` says nothing to a push service, and the
            // `Content-Type: application/x-www-form-urlencoded` libcurl adds to every POST body
            // would mislabel a JSON payload (APNs). Fewer headers also cost less per request.
            for name in ["accept", "content-type"] where !shared.contains(where: { $0.0.lowercased() == name }) {
                lines.append(name + ":")
            }
            for line in lines {
                guard let appended = curl_slist_append(list, line) else {
                    curl_slist_free_all(list)
                    throw TransportError(.other, "curl_slist_append failed (out of memory)")
                }
                list = appended
            }
            headerList = list
            lastHeaders = Array(shared)
        }
        // The previous request's nodes are no longer referred to once CURLOPT_HTTPHEADER is set
        // below; if that fails, the next `prepare` resets the handle (nothing refers to them).
        let previousLeading = (leadingHead, leadingCount)
        defer { Self.freeNodes(previousLeading.0, previousLeading.1) }
        leadingHead = nil
        leadingCount = 0
        let head: UnsafeMutablePointer<curl_slist>?
        if unique > 0, let h = writeInline(request.headers[..<unique], next: headerList) {
            head = h
        } else {
            head = try allocateLeading(request.headers[..<unique], next: headerList)
        }
        if head != appliedHeaderList || head == nil {
            try setPointer(CURLOPT_HTTPHEADER, UnsafeMutableRawPointer(head), "CURLOPT_HTTPHEADER")
            appliedHeaderList = head
        }
        configured = true
    }

    /// Writes the leading header lines ("name: value", "name;" for an empty value) into the
    /// handle's own nodes and text, the last node leading to `next`; nil if they do not fit.
    private func writeInline(_ lines: ArraySlice<(String, String)>, next: UnsafeMutablePointer<curl_slist>?) -> UnsafeMutablePointer<curl_slist>? {
        var need = 0
        for (name, value) in lines { need += name.utf8.count + (value.isEmpty ? 1 : 2 + value.utf8.count) + 1 }
        guard need <= Self.inlineTextBytes, lines.count <= Self.inlineNodeCount else { return nil }
        var at = 0
        func put<S: Sequence<UInt8>>(_ bytes: S) {
            for b in bytes {
                inlineText[at] = CChar(bitPattern: b)
                at += 1
            }
        }
        for (k, (name, value)) in lines.enumerated() {
            let start = inlineText + at
            put(name.utf8)
            if value.isEmpty {
                put(";".utf8)
            } else {
                put(": ".utf8)
                put(value.utf8)
            }
            put(CollectionOfOne(0))
            inlineNodes[k] = curl_slist(data: start, next: k + 1 < lines.count ? inlineNodes + (k + 1) : next)
        }
        return inlineNodes
    }

    /// The leading header lines as nodes of their own (each line a strdup) leading to `next`;
    /// recorded in `leadingHead`/`leadingCount` to be freed after the request.
    private func allocateLeading(_ lines: ArraySlice<(String, String)>, next: UnsafeMutablePointer<curl_slist>?) throws(TransportError) -> UnsafeMutablePointer<curl_slist>? {
        var head = next
        for (name, value) in lines.reversed() {
            let line = value.isEmpty ? name + ";" : name + ": " + value
            guard let data = strdup(line) else {
                throw TransportError(.other, "strdup failed for a request header (out of memory)")
            }
            let node = UnsafeMutablePointer<curl_slist>.allocate(capacity: 1)
            node.initialize(to: curl_slist(data: data, next: head))
            head = node
            leadingHead = node
            leadingCount += 1
        }
        return head
    }

    /// Frees `count` nodes made by `prepare` from `head` on (not the kept list they lead to).
    private static func freeNodes(_ head: UnsafeMutablePointer<curl_slist>?, _ count: Int) {
        var node = head
        for _ in 0..<count {
            guard let n = node else { return }
            node = n.pointee.next
            free(n.pointee.data)
            n.deinitialize(count: 1)
            n.deallocate()
        }
    }

    private func freeLeadingNodes() {
        Self.freeNodes(leadingHead, leadingCount)
        leadingHead = nil
        leadingCount = 0
    }

    /// The options that stay the same for a method and TLS setting (after curl_easy_reset).
    private func configure(_ request: HTTPRequest, options: TransportOptions) throws(TransportError) {
        let me = Unmanaged.passUnretained(self).toOpaque()
        try setString(CURLOPT_PROTOCOLS_STR, "https", "CURLOPT_PROTOCOLS_STR")
        try setLong(CURLOPT_NOSIGNAL, 1, "CURLOPT_NOSIGNAL")
        try setLong(CURLOPT_HTTP_VERSION, Int(CURL_HTTP_VERSION_2TLS), "CURLOPT_HTTP_VERSION")
        try setLong(CURLOPT_PIPEWAIT, 1, "CURLOPT_PIPEWAIT")
        try setLong(CURLOPT_TCP_KEEPALIVE, 1, "CURLOPT_TCP_KEEPALIVE")
        try setLong(CURLOPT_TCP_KEEPIDLE, 60, "CURLOPT_TCP_KEEPIDLE")
        try setLong(CURLOPT_TCP_KEEPINTVL, 30, "CURLOPT_TCP_KEEPINTVL")
        try setLong(CURLOPT_MAXAGE_CONN, options.idleTimeoutSeconds, "CURLOPT_MAXAGE_CONN")
        try setPointer(CURLOPT_PRIVATE, me, "CURLOPT_PRIVATE")
        try setPointer(CURLOPT_ERRORBUFFER, UnsafeMutableRawPointer(errorBuffer), "CURLOPT_ERRORBUFFER")
        try setCallback(CURLOPT_WRITEFUNCTION, transferWriteCallback, "CURLOPT_WRITEFUNCTION")
        try setPointer(CURLOPT_WRITEDATA, me, "CURLOPT_WRITEDATA")
        try setCallback(CURLOPT_HEADERFUNCTION, transferHeaderCallback, "CURLOPT_HEADERFUNCTION")
        try setPointer(CURLOPT_HEADERDATA, me, "CURLOPT_HEADERDATA")
        try setString(CURLOPT_USERAGENT, "pushline", "CURLOPT_USERAGENT")
        try check(pl_curl_easy_setopt_opensocket_cb(easy, transferOpenSocket), "CURLOPT_OPENSOCKETFUNCTION")
        try setPointer(CURLOPT_OPENSOCKETDATA, me, "CURLOPT_OPENSOCKETDATA")
        try check(pl_curl_easy_setopt_closesocket_cb(easy, transferCloseSocket), "CURLOPT_CLOSESOCKETFUNCTION")
        try setPointer(CURLOPT_CLOSESOCKETDATA, Unmanaged.passUnretained(ledger).toOpaque(), "CURLOPT_CLOSESOCKETDATA")
        // Per-handle buffers: libcurl's defaults (64 KiB for the upload buffer, 16 KiB for the
        // receive buffer) were 90 of the 150 MB heaptrack counted at the peak of a 100k bulk
        // with 1000 streams in flight. Push requests and answers are a few KiB at most; larger
        // bodies just pass through in more pieces. 16 KiB is libcurl's minimum upload buffer.
        try setLong(CURLOPT_UPLOAD_BUFFERSIZE, 16 * 1024, "CURLOPT_UPLOAD_BUFFERSIZE")
        // libcurl 7.88 refuses CURLOPT_BUFFERSIZE (CURLE_BAD_FUNCTION_ARGUMENT) while the handle
        // still holds a receive buffer, which it keeps when a transfer ends while other streams
        // use its connection; curl_easy_reset does not free it. The handle then keeps the buffer
        // it has (of the size set before: reset handles were all configured here), so a refusal
        // for that reason changes nothing and must not fail the request.
        let rc = pl_curl_easy_setopt_long(easy, CURLOPT_BUFFERSIZE, Self.receiveBufferSize)
        if rc != CURLE_OK && rc != CURLE_BAD_FUNCTION_ARGUMENT { try check(rc, "CURLOPT_BUFFERSIZE") }

        let tls = request.tls
        if let ca = tls.caFile {
            try setString(CURLOPT_CAINFO, ca, "CURLOPT_CAINFO")
        }
        if let cert = tls.clientCertFile {
            try setString(CURLOPT_SSLCERT, cert, "CURLOPT_SSLCERT")
            try setString(CURLOPT_SSLKEY, cert, "CURLOPT_SSLKEY")
            try setString(CURLOPT_SSLCERTTYPE, "PEM", "CURLOPT_SSLCERTTYPE")
            try setString(CURLOPT_SSLKEYTYPE, "PEM", "CURLOPT_SSLKEYTYPE")
            if let password = tls.clientKeyPassword {
                try setString(CURLOPT_KEYPASSWD, password, "CURLOPT_KEYPASSWD")
            }
        }

        if let proxy = tls.proxy {
            // An HTTP proxy, tunnelled with CONNECT (the TLS session stays end to end).
            try setString(CURLOPT_PROXY, proxy, "CURLOPT_PROXY")
            try setLong(CURLOPT_HTTPPROXYTUNNEL, 1, "CURLOPT_HTTPPROXYTUNNEL")
        }

        switch request.method {
        case "GET":
            try setLong(CURLOPT_HTTPGET, 1, "CURLOPT_HTTPGET")
        case "HEAD":
            try setLong(CURLOPT_NOBODY, 1, "CURLOPT_NOBODY")
        case "POST":
            break  // POSTFIELDS, set per request, makes it a POST.
        default:
            try setString(CURLOPT_CUSTOMREQUEST, request.method, "CURLOPT_CUSTOMREQUEST")
        }
    }

    private func freeHeaderList() {
        if headerList != nil {
            curl_slist_free_all(headerList)
            headerList = nil
        }
        lastHeaders = []
        // The handle may still point at the freed list: set it again before the next transfer.
        appliedHeaderList = nil
    }

    private func setBody(_ bytes: [UInt8]) throws(TransportError) {
        if bytes.count > bodyCapacity {
            bodyStorage.deallocate()
            bodyCapacity = max(bytes.count, bodyCapacity * 2)
            bodyStorage = .allocate(byteCount: bodyCapacity, alignment: 16)
        }
        bytes.withUnsafeBytes { src in
            if let base = src.baseAddress, src.count > 0 {
                bodyStorage.copyMemory(from: base, byteCount: src.count)
            }
        }
        bodyCount = bytes.count
        try setOffT(CURLOPT_POSTFIELDSIZE_LARGE, curl_off_t(bytes.count), "CURLOPT_POSTFIELDSIZE_LARGE")
        try setPointer(CURLOPT_POSTFIELDS, bodyStorage, "CURLOPT_POSTFIELDS")
    }

    // MARK: Response callbacks (called by libcurl on the loop thread)

    func appendBody(_ bytes: UnsafeRawBufferPointer) -> Bool {
        if body.count + bytes.count > maxResponseBytes {
            tooLarge = true
            return false
        }
        body.append(contentsOf: bytes)
        return true
    }

    func headerLine(_ line: UnsafeRawBufferPointer) {
        var end = line.count
        while end > 0, line[end - 1] == 10 || line[end - 1] == 13 { end -= 1 }
        guard end > 0 else {
            // The blank line closing a header block (or a trailer block, after a final one).
            if gotResponse && status >= 200 && !headersDone {
                headersDone = true
                headersDoneAt = monotonicNanos()
                headersDonePass = pass.number
                if !bodySent {
                    answeredBeforeBodySent = true
                    pass.earlyAnswers.append(self)
                }
            }
            return
        }
        if end >= 5, line[0] == 72, line[1] == 84, line[2] == 84, line[3] == 80, line[4] == 47 {
            // "HTTP/...": a new response (after 1xx, or the first); keep only its headers.
            headers.removeAll(keepingCapacity: true)
            gotResponse = true
            var i = 5
            while i < end, line[i] != 32 { i += 1 }
            var code = 0
            i += 1
            while i < end, line[i] >= 48, line[i] <= 57 {
                code = code * 10 + Int(line[i] - 48)
                i += 1
            }
            status = code
            return
        }
        var colon = 0
        while colon < end, line[colon] != 58 { colon += 1 }
        guard colon < end, colon > 0 else { return }
        var valueStart = colon + 1
        while valueStart < end, line[valueStart] == 32 || line[valueStart] == 9 { valueStart += 1 }
        // HTTP/2 names arrive lowercase already; lowering is only for odd servers.
        let name = UnsafeRawBufferPointer(rebasing: line[0..<colon]).lazy.map { $0 >= 65 && $0 <= 90 ? $0 + 32 : $0 }
        if headers.isEmpty { headers.reserveCapacity(256) }
        HTTPResponse.appendHeader(name, UnsafeRawBufferPointer(rebasing: line[valueStart..<end]), to: &headers)
    }

    /// Whether a transfer libcurl failed with `code` nonetheless received its complete response, which
    /// the server followed with RST_STREAM(NO_ERROR) before the request body was all sent.
    ///
    /// RFC 9113 section 8.1: "A server can send a complete response prior to the client sending an
    /// entire request if the response does not depend on any portion of the request that has not
    /// been sent and received. When this is true, a server MAY request that the client abort
    /// transmission of a request without error by sending a RST_STREAM with an error code of
    /// NO_ERROR after sending a complete response (i.e., a frame with the END_STREAM flag set).
    /// Clients MUST NOT discard responses as a result of receiving such a RST_STREAM". nginx does
    /// exactly that for `return 200;` (APNs, WebPush and WNS answer HEADERS-only the same way):
    /// on loopback the answer arrives before libcurl has written the DATA frame, because libcurl
    /// 7.88 reads the socket before it sends a request body (Curl_readwrite: readwrite_data, then
    /// readwrite_upload). It then handles the stream's clean close (the response is delivered),
    /// and its next attempt to send the body fails with CURLE_HTTP2_STREAM ("stream N closed",
    /// an info message: no failf, so the error buffer stays empty). A stream reset with an error
    /// code instead fails with "HTTP/2 stream N was not closed cleanly" in the error buffer, and
    /// one closed before the response's headers with "... before getting all response header
    /// fields": neither is taken for a complete response here.
    func completedBeforeUpload(_ code: CURLcode) -> Bool {
        guard code == CURLE_HTTP2_STREAM, headersDone, !tooLarge, errorBuffer[0] == 0 else { return false }
        // A declared length must have arrived in full (a body cut short is not a complete response).
        let declared = HTTPResponse(status: status, rawHeaders: headers, body: []).header("content-length")
        if let declared, let length = Int(declared), length != body.count { return false }
        return true
    }

    /// Whether libcurl has handed the whole request body to HTTP/2 (nghttp2 sends it, with
    /// END_STREAM, within the same call). A request without a body counts as sent.
    var bodySent: Bool {
        guard bodyCount > 0 else { return true }
        var sent: curl_off_t = 0
        guard pl_curl_easy_getinfo_off_t(easy, CURLINFO_SIZE_UPLOAD_T, &sent) == CURLE_OK else { return false }
        return sent >= curl_off_t(bodyCount)
    }

    /// Makes libcurl read this transfer's connection on its next pass (see
    /// `EventLoop.watchActive`): pausing receiving and resuming it at once sets the connection's
    /// "check for input" bits (easy.c `curl_easy_pause`: `conn->cselect_bits`) and expires the
    /// transfer's timer, so the transfer's next `Curl_readwrite` calls into the HTTP/2 filter
    /// even though the socket has nothing to read. There it finds its stream closed and ends.
    /// The pause sets the stream's receive window to 0 and the resume back (nghttp2 ignores
    /// both for a stream it has closed). Returns whether both calls succeeded.
    func nudge() -> Bool {
        nudges += 1
        guard curl_easy_pause(easy, CURLPAUSE_RECV) == CURLE_OK else { return false }
        return curl_easy_pause(easy, CURLPAUSE_CONT) == CURLE_OK
    }

    /// Whether libcurl has neither resolved a host nor sent anything for this transfer: it is
    /// waiting for a connection (libcurl's PENDING state, or just added).
    var waitingForConnection: Bool {
        var lookup = 0.0
        var pretransfer = 0.0
        guard pl_curl_easy_getinfo_double(easy, CURLINFO_NAMELOOKUP_TIME, &lookup) == CURLE_OK,
            pl_curl_easy_getinfo_double(easy, CURLINFO_PRETRANSFER_TIME, &pretransfer) == CURLE_OK
        else { return false }
        return lookup == 0 && pretransfer == 0
    }

    /// Where libcurl had got with this transfer, for an error message.
    var progressDescription: String {
        var pretransfer = 0.0
        var connect = 0.0
        _ = pl_curl_easy_getinfo_double(easy, CURLINFO_PRETRANSFER_TIME, &pretransfer)  // 0 if it fails: said so below.
        _ = pl_curl_easy_getinfo_double(easy, CURLINFO_CONNECT_TIME, &connect)
        if pretransfer > 0 { return gotResponse ? "response incomplete" : "request sent, no response" }
        return connect > 0 ? "connected, request not sent" : "never got a connection"
    }

    /// How far a transfer that timed out had got: whether its request went out (body bytes
    /// sent), what came back (status, whether the header block ended, body bytes) and when
    /// (libcurl's times since the transfer started), and on which local port (to find its
    /// connection in a capture). Only read for a failure.
    var timeoutDetail: String {
        var pretransfer = 0.0
        var firstByte = 0.0
        var uploaded = 0.0
        var port = 0
        _ = pl_curl_easy_getinfo_double(easy, CURLINFO_PRETRANSFER_TIME, &pretransfer)  // 0 if it fails.
        _ = pl_curl_easy_getinfo_double(easy, CURLINFO_STARTTRANSFER_TIME, &firstByte)
        _ = pl_curl_easy_getinfo_double(easy, CURLINFO_SIZE_UPLOAD, &uploaded)
        _ = pl_curl_easy_getinfo_long(easy, CURLINFO_LOCAL_PORT, &port)
        var d = progressDescription
        d += ", sent \(Int(uploaded)) body bytes, ready to send at \(Int(pretransfer * 1000)) ms"
        if gotResponse {
            d += ", status \(status) at \(Int(firstByte * 1000)) ms, header block "
            d += (headersDone ? "complete" : "incomplete") + ", \(body.count) body bytes"
        }
        if port > 0 { d += ", local port \(port)" }
        return d
    }

    /// The TransportError for a failed transfer.
    func error(for code: CURLcode, job: TransportJob) -> TransportError {
        if tooLarge {
            return TransportError(.other, "response body larger than \(maxResponseBytes) bytes")
        }
        let detail = String(cString: errorBuffer)
        var message = curlMessage(code)
        if !detail.isEmpty && detail != message { message += ": " + detail }
        let kind = transportErrorKind(code)
        if kind == .timeout {
            message = "no response within \(job.request.timeoutMs) ms (" + message + "; " + timeoutDetail + ")"
        }
        return TransportError(kind, message)
    }

    // MARK: setopt with checked return codes

    private func check(_ rc: CURLcode, _ name: String) throws(TransportError) {
        if rc != CURLE_OK {
            throw TransportError(.other, "curl_easy_setopt(\(name)) failed: \(curlMessage(rc))")
        }
    }
    private func setLong(_ option: CURLoption, _ value: Int, _ name: String) throws(TransportError) {
        try check(pl_curl_easy_setopt_long(easy, option, value), name)
    }
    private func setOffT(_ option: CURLoption, _ value: curl_off_t, _ name: String) throws(TransportError) {
        try check(pl_curl_easy_setopt_off_t(easy, option, value), name)
    }
    private func setString(_ option: CURLoption, _ value: String, _ name: String) throws(TransportError) {
        // libcurl copies string options (all but POSTFIELDS) so the C string may go away after.
        let rc = value.withCString { pl_curl_easy_setopt_string(easy, option, $0) }
        try check(rc, name)
    }
    private func setPointer(_ option: CURLoption, _ value: UnsafeMutableRawPointer?, _ name: String) throws(TransportError) {
        try check(pl_curl_easy_setopt_pointer(easy, option, value), name)
    }
    private func setCallback(_ option: CURLoption, _ cb: pl_curl_data_cb, _ name: String) throws(TransportError) {
        try check(pl_curl_easy_setopt_data_cb(easy, option, cb), name)
    }
}

// MARK: Connection pools (HTTPRequest.connectionPool)

extension Transfer {
    /// Puts the next transfer in connection pool `pool` and lets it reuse connections again.
    ///
    /// libcurl 7.88 keys its connection cache by "scope id/port/host" (conncache.c `hashkey`)
    /// and never reuses a connection across keys, so the pool number goes into
    /// CURLOPT_ADDRESS_SCOPE: requests of different pools never share a connection, and
    /// CURLMOPT_MAX_HOST_CONNECTIONS counts per pool. The scope id is otherwise only applied
    /// to IPv6 link-local addresses (cf-socket.c; Linux ignores it for other addresses), which
    /// no push service uses. CURLOPT_FRESH_CONNECT would not do: it only keeps the one
    /// transfer off existing connections, the next one may pick an old connection again.
    fileprivate func selectPool(_ pool: UInt32, afterReset: Bool) throws(TransportError) {
        if afterReset {  // curl_easy_reset cleared both options.
            lastPool = 0
            reuseForbidden = false
        }
        if pool != lastPool {
            try setLong(CURLOPT_ADDRESS_SCOPE, Int(pool), "CURLOPT_ADDRESS_SCOPE")
            lastPool = pool
        }
        if reuseForbidden {
            try setLong(CURLOPT_FORBID_REUSE, 0, "CURLOPT_FORBID_REUSE")
            reuseForbidden = false
        }
    }

    /// Makes libcurl close this transfer's connection when it is the last transfer on it to
    /// end (multi.c `multi_done`: a connection still used by other transfers stays; each of
    /// those is marked too). Used for retired pools, also on transfers in flight: libcurl reads
    /// the flag only when the transfer ends. Returns false if libcurl refused the option (the
    /// connection then just idles out: its pool gets no new requests).
    func forbidReuse() -> Bool {
        guard !reuseForbidden else { return true }
        guard pl_curl_easy_setopt_long(easy, CURLOPT_FORBID_REUSE, 1) == CURLE_OK else { return false }
        reuseForbidden = true
        return true
    }

    /// The pool of the request this handle was last prepared for.
    var pool: UInt32 { lastPool }
}

/// Whether two header lists are equal, in order.
private func sameHeaders(_ a: ArraySlice<(String, String)>, _ b: [(String, String)]) -> Bool {
    guard a.count == b.count else { return false }
    for (x, y) in zip(a, b) where x.0 != y.0 || x.1 != y.1 { return false }
    return true
}

/// CURLOPT_WRITEFUNCTION: appends body bytes to the `Transfer` passed as WRITEDATA.
///
/// A file-scope function (not a closure) so it converts to a C function pointer.
private func transferWriteCallback(
    _ ptr: UnsafeMutablePointer<CChar>?, _ size: Int, _ count: Int, _ userdata: UnsafeMutableRawPointer?
) -> Int {
    let length = size * count
    guard let userdata, let ptr, length > 0 else { return length }
    let transfer = Unmanaged<Transfer>.fromOpaque(userdata).takeUnretainedValue()
    // Returning less than `length` makes libcurl fail the transfer with CURLE_WRITE_ERROR.
    return transfer.appendBody(UnsafeRawBufferPointer(start: ptr, count: length)) ? length : 0
}

/// CURLOPT_HEADERFUNCTION: one header line (or status line) for the `Transfer` passed as HEADERDATA.
private func transferHeaderCallback(
    _ ptr: UnsafeMutablePointer<CChar>?, _ size: Int, _ count: Int, _ userdata: UnsafeMutableRawPointer?
) -> Int {
    let length = size * count
    guard let userdata, let ptr, length > 0 else { return length }
    let transfer = Unmanaged<Transfer>.fromOpaque(userdata).takeUnretainedValue()
    transfer.headerLine(UnsafeRawBufferPointer(start: ptr, count: length))
    return length
}

/// Maps a libcurl error to the transport's error kinds.
func transportErrorKind(_ code: CURLcode) -> TransportError.Kind {
    switch code {
    case CURLE_OPERATION_TIMEDOUT:
        return .timeout
    case CURLE_COULDNT_CONNECT, CURLE_COULDNT_RESOLVE_HOST, CURLE_COULDNT_RESOLVE_PROXY:
        return .connect
    case CURLE_SSL_CONNECT_ERROR, CURLE_PEER_FAILED_VERIFICATION, CURLE_SSL_CERTPROBLEM, CURLE_SSL_CIPHER,
        CURLE_SSL_ENGINE_NOTFOUND, CURLE_SSL_ENGINE_SETFAILED, CURLE_SSL_ENGINE_INITFAILED,
        CURLE_SSL_CACERT_BADFILE, CURLE_SSL_SHUTDOWN_FAILED, CURLE_SSL_CRL_BADFILE, CURLE_SSL_ISSUER_ERROR,
        CURLE_SSL_PINNEDPUBKEYNOTMATCH, CURLE_SSL_INVALIDCERTSTATUS, CURLE_SSL_CLIENTCERT:
        return .tls
    case CURLE_SEND_ERROR, CURLE_RECV_ERROR, CURLE_HTTP2, CURLE_HTTP2_STREAM, CURLE_GOT_NOTHING, CURLE_PARTIAL_FILE:
        return .connectionLost
    default:
        return .other
    }
}
