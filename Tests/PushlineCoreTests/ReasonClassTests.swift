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

/// Failure reasons as an enum: each provider maps its reasons into `FailureReason`, the wire
/// string stays what it was, and `reason_class` comes from the case.
@Suite struct FailureReasonTests {
    /// Every reason of the old class tables (Model/ReasonClass.swift before the enum), with its class.
    static let oldTables: [(String, ReasonClass)] = [
        ("BadDeviceToken", .invalidToken), ("Unregistered", .invalidToken), ("ExpiredToken", .invalidToken),
        ("DeviceTokenNotForTopic", .invalidToken), ("UNREGISTERED", .invalidToken), ("SENDER_ID_MISMATCH", .invalidToken),
        ("not_found", .invalidToken), ("gone", .invalidToken), ("channel_expired", .invalidToken),
        ("invalid_channel_uri", .invalidToken), ("TooManyRequests", .rateLimited), ("TooManyProviderTokenUpdates", .rateLimited),
        ("QUOTA_EXCEEDED", .rateLimited), ("too_many_requests", .rateLimited), ("throttled", .rateLimited),
        ("channelthrottled", .rateLimited), ("InternalServerError", .providerError), ("ServiceUnavailable", .providerError),
        ("Shutdown", .providerError), ("UNAVAILABLE", .providerError), ("INTERNAL", .providerError), ("dropped", .providerError),
        ("InvalidProviderToken", .auth), ("ExpiredProviderToken", .auth), ("MissingProviderToken", .auth), ("Forbidden", .auth),
        ("BadCertificate", .auth), ("BadCertificateEnvironment", .auth), ("THIRD_PARTY_AUTH_ERROR", .auth), ("AUTH_ERROR", .auth),
        ("PERMISSION_DENIED", .auth), ("unauthorized", .auth), ("forbidden", .auth), ("provider_not_configured", .configuration),
        ("TopicDisallowed", .configuration), ("BadTopic", .configuration), ("MissingTopic", .configuration),
        ("InvalidPushType", .configuration), ("PayloadTooLarge", .badRequest), ("PayloadEmpty", .badRequest),
        ("BadCollapseId", .badRequest), ("BadExpirationDate", .badRequest), ("BadMessageId", .badRequest),
        ("BadPriority", .badRequest), ("BadPath", .badRequest), ("MethodNotAllowed", .badRequest),
        ("DuplicateHeaders", .badRequest), ("BadDate", .badRequest), ("MissingDeviceToken", .badRequest),
        ("INVALID_ARGUMENT", .badRequest), ("payload_too_large", .badRequest), ("bad_request", .badRequest),
        ("encryption_failed", .badRequest), ("timeout", .transport), ("connection_lost", .transport),
        ("tls_error", .transport), ("connect_error", .transport),
    ]

    @Test("a wire reason reads back to a case of its old class, with the same wire string")
    func wireRoundTrip() {
        for (wire, c) in Self.oldTables {
            for w in [wire, wire + ": an explanation"] {
                let f = FailureReason(wire: w)
                #expect(f.wire == w)
                #expect(f.reasonClass() == c, "\(w)")
                var r = DeliveryResult(deviceId: 1, platform: .apns, registrationId: "x", status: .failed, reason: w)
                #expect(r.reason == w)
                #expect(r.reasonClass == c, "\(w)")
                r.deactivate = true
                #expect(r.reasonClass == .invalidToken)
            }
        }
        #expect(FailureReason(wire: "NewAppleReason") == .unknown("NewAppleReason"))
        #expect(FailureReason(wire: "not_registered") == .notRegistered)
        #expect(FailureReason(wire: "http_503: busy").reasonClass() == .providerError)
        #expect(FailureReason(wire: "HTTP 418").reasonClass(retryable: true) == .providerError)
        #expect(FailureReason(wire: "HTTP 418").reasonClass(retryable: false) == .unknown)
    }

    @Test("each provider's own mapping agrees with the wire reading")
    func providerMappings() {
        for (name, e) in APNsError.table {
            #expect(e.failure().wire == name)
            #expect(e.failure() == FailureReason(wire: name), "\(name)")
            #expect(e.failure("\(name): Apple rejected it") == FailureReason(wire: "\(name): Apple rejected it"))
        }
        #expect(APNsError.unknown("NewOne").failure() == .unknown("NewOne"))
        #expect(APNsError.unknown("HTTP 500").failure() == .providerError("HTTP 500"))
        #expect(APNsProvider.badToken == .invalidToken(APNsProvider.badTokenReason))
        for (code, c) in FCMReasons.classes {
            #expect(FCMReasons.failure(String(code)).reasonClass() == c)
            #expect(FCMReasons.failure(String(code)) == FailureReason(wire: String(code)))
        }
        #expect(FCMReasons.failure("UNAUTHENTICATED") == .unknown("UNAUTHENTICATED"))
        #expect(FCMReasons.failure("timeout") == .transport("timeout"))
        for (code, c) in WebWNS.reasonClasses {
            #expect(WebWNS.failure(String(code)).reasonClass() == c)
            #expect(WebWNS.failure(String(code)) == FailureReason(wire: String(code)))
        }
        let d = Device(id: 7, platform: .apns, app: "a", registrationId: "ab")
        let t = DeliveryResult.transportFailed(d, TransportError(.timeout, "slow"))
        #expect(t.failure == .transport("timeout"))
        #expect(t.reasonClass == .transport)
    }
}
