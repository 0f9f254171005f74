import Testing

@testable import PushlineCore

/// `reason_class` (protocol.md section 4): every reason the providers and Pushline produce
/// falls in the class a client would expect.
@Suite struct ReasonClassTests {
    @Test("provider and Pushline reasons map to their class", arguments: [
        ("BadDeviceToken", false, false, ReasonClass.invalidToken),
        ("Unregistered", true, false, .invalidToken),
        ("UNREGISTERED", true, false, .invalidToken),
        ("whatever Apple adds", true, false, .invalidToken),  // deactivated: the token is gone
        ("invalid_subscription: registration_id is not an https push endpoint URL", false, false, .invalidToken),
        ("not_registered", false, false, .notRegistered),
        ("inactive", false, false, .notRegistered),
        ("TooManyRequests", false, true, .rateLimited),
        ("QUOTA_EXCEEDED", false, true, .rateLimited),
        ("too_many_requests", false, true, .rateLimited),
        ("ServiceUnavailable", false, true, .providerError),
        ("UNAVAILABLE", false, true, .providerError),
        ("http_503", false, true, .providerError),
        ("http_502: bad gateway", false, true, .providerError),
        ("timeout", false, true, .transport),
        ("connection_lost", false, true, .transport),
        ("tls_error", false, false, .transport),
        ("connect_error", false, true, .transport),
        ("InvalidProviderToken", false, false, .auth),
        ("AUTH_ERROR", false, false, .auth),
        ("unauthorized: bad token", false, false, .auth),
        ("token_error: timeout: x", false, true, .auth),
        ("cannot sign the APNs provider token (key id K, team T): x", false, false, .auth),
        ("BadExpirationDate", false, false, .badRequest),
        ("INVALID_ARGUMENT", false, false, .badRequest),
        ("bad_request: body", false, false, .badRequest),
        ("payload_too_large", false, false, .badRequest),
        ("provider_not_configured", false, false, .configuration),
        ("TopicDisallowed", false, false, .configuration),
        ("HTTP 418", false, false, .unknown),
        ("something new", false, false, .unknown),
    ])
    func classes(reason: String, deactivate: Bool, retryable: Bool, expected: ReasonClass) {
        #expect(ReasonClass.of(reason: reason, deactivate: deactivate, retryable: retryable) == expected)
    }

    @Test("every transport reason is classed transport")
    func transportReasons() {
        for kind in [TransportError.Kind.timeout, .connect, .tls, .connectionLost, .unavailable, .other] {
            let e = TransportError(kind, "x")
            #expect(ReasonClass.of(reason: e.protocolReason, deactivate: false, retryable: e.retryable) == .transport)
        }
    }
}
