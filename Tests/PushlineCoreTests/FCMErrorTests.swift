import Testing

@testable import PushlineCore

/// Google's FCM v1 error bodies and what the provider does with each.
@Suite struct FCMErrorTests {
    @Test("Retry-After: delay-seconds and the three HTTP-date forms of RFC 9110")
    func retryAfterForms() {
        let now: Int64 = 784_111_717_000  // Sun, 06 Nov 1994 08:48:37 GMT
        #expect(RetryAfter.seconds("120", nowMs: now) == 120)
        #expect(RetryAfter.seconds(" 0 ", nowMs: now) == 0)
        #expect(RetryAfter.seconds("Sun, 06 Nov 1994 08:49:37 GMT", nowMs: now) == 60)
        #expect(RetryAfter.seconds("Sunday, 06-Nov-94 08:49:37 GMT", nowMs: now) == 60)
        #expect(RetryAfter.seconds("Sun Nov  6 08:49:37 1994", nowMs: now) == 60)
        #expect(RetryAfter.seconds("Sun, 06 Nov 1994 08:00:00 GMT", nowMs: now) == 0)  // in the past
        #expect(RetryAfter.seconds("Thu, 01 Jan 2026 00:00:00 GMT", nowMs: 0) == 1_767_225_600)
        #expect(RetryAfter.seconds("Tue, 29 Feb 2028 12:00:00 GMT", nowMs: 1_835_395_200_000) == 43_200)
        for bad in ["-5", "soon", "Sun, 06 Nov 1994 GMT", "Sun, 32 Nov 1994 08:49:37 GMT", "Sun, 06 Foo 1994 08:49:37 GMT", ""] {
            #expect(RetryAfter.seconds(bad, nowMs: now) == nil, "\(bad)")
        }
        #expect(RetryAfter.seconds(nil) == nil)
    }

    func info(_ status: Int, _ json: String) -> FCMErrorInfo {
        FCMErrorInfo(httpStatus: status, body: Array(json.utf8))
    }
    func google(_ http: Int, _ status: String, _ message: String, _ code: String?, field: String? = nil) -> FCMErrorInfo {
        var details: [JSONValue] = []
        if let code {
            details.append(["@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": .string(code)])
        }
        if let field {
            details.append([
                "@type": "type.googleapis.com/google.rpc.BadRequest",
                "fieldViolations": [["field": .string(field), "description": .string(message)]],
            ])
        }
        let body: JSONValue = [
            "error": ["code": .int(Int64(http)), "message": .string(message), "status": .string(status), "details": .array(details)]
        ]
        return FCMErrorInfo(httpStatus: http, body: body.serialized())
    }

    @Test func parsesGoogleShape() {
        let e = google(404, "NOT_FOUND", "Requested entity was not found.", "UNREGISTERED")
        #expect(e.status == "NOT_FOUND")
        #expect(e.fcmErrorCode == "UNREGISTERED")
        #expect(e.code == "UNREGISTERED")
        #expect(e.message == "Requested entity was not found.")
    }

    @Test func deadTokensDeactivate() {
        #expect(FCMFailure.classify(google(404, "NOT_FOUND", "Requested entity was not found.", "UNREGISTERED")) == .deactivate("UNREGISTERED"))
        #expect(FCMFailure.classify(google(403, "PERMISSION_DENIED", "SenderId mismatch", "SENDER_ID_MISMATCH")) == .deactivate("SENDER_ID_MISMATCH"))
        let badToken = google(
            400, "INVALID_ARGUMENT", "The registration token is not a valid FCM registration token", "INVALID_ARGUMENT",
            field: "message.token")
        #expect(FCMFailure.classify(badToken) == .deactivate("INVALID_ARGUMENT"))
        // Message text alone (no field violation) is enough.
        #expect(
            FCMFailure.classify(google(400, "INVALID_ARGUMENT", "The registration token is not a valid FCM registration token", "INVALID_ARGUMENT"))
                == .deactivate("INVALID_ARGUMENT"))
    }

    @Test func badMessageDoesNotDeactivate() {
        let tooBig = google(400, "INVALID_ARGUMENT", "Android message is too big", "INVALID_ARGUMENT", field: "message")
        guard case .fail(let code, let msg, let retryable) = FCMFailure.classify(tooBig) else {
            Issue.record("expected .fail")
            return
        }
        #expect(code == "INVALID_ARGUMENT")
        #expect(msg.contains("too big"))
        #expect(!retryable)
        let color = google(
            400, "INVALID_ARGUMENT", "Invalid color format", "INVALID_ARGUMENT", field: "message.android.notification.color")
        if case .deactivate = FCMFailure.classify(color) { Issue.record("a bad color must not deactivate") }
        // No details at all: a plain 400 is the message's fault.
        if case .deactivate = FCMFailure.classify(info(400, #"{"error":{"code":400,"message":"Request contains an invalid argument.","status":"INVALID_ARGUMENT"}}"#)) {
            Issue.record("a generic INVALID_ARGUMENT must not deactivate")
        }
    }

    @Test func transientAndQuota() {
        #expect(FCMFailure.classify(google(503, "UNAVAILABLE", "x", "UNAVAILABLE")) == .retry("UNAVAILABLE"))
        #expect(FCMFailure.classify(google(500, "INTERNAL", "x", "INTERNAL")) == .retry("INTERNAL"))
        #expect(FCMFailure.classify(info(502, "<html>bad gateway</html>")) == .retry("HTTP_502"))
        #expect(FCMFailure.classify(google(429, "RESOURCE_EXHAUSTED", "quota", "QUOTA_EXCEEDED")) == .quota)
        #expect(
            FCMFailure.classify(google(429, "RESOURCE_EXHAUSTED", "Device message rate exceeded.", "QUOTA_EXCEEDED"))
                == .targetRate)
    }

    @Test func authErrors() {
        // A plain 401 is our OAuth2 token: refresh it.
        #expect(FCMFailure.classify(google(401, "UNAUTHENTICATED", "Request had invalid authentication credentials.", nil)) == .refreshToken)
        // THIRD_PARTY_AUTH_ERROR is also a 401, but refreshing our token cannot help.
        guard case .fail(let code, let msg, _) = FCMFailure.classify(
            google(401, "UNAUTHENTICATED", "Auth error from APNS or Web Push Service", "THIRD_PARTY_AUTH_ERROR"))
        else {
            Issue.record("expected .fail")
            return
        }
        #expect(code == "THIRD_PARTY_AUTH_ERROR")
        #expect(msg.contains("APNs"))
        #expect(msg.contains("Firebase console"))
    }

    @Test func otherErrorsFailOneDevice() {
        let e = google(403, "PERMISSION_DENIED", "Permission denied on resource", nil)
        #expect(FCMFailure.classify(e) == .fail("PERMISSION_DENIED", "Permission denied on resource", retryable: false))
        #expect(FCMFailure.classify(info(418, "")) == .fail("HTTP_418", "HTTP 418", retryable: false))
    }
}
