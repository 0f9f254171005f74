/// Google's answer to a failed FCM v1 send, parsed from its JSON error body.
///
/// ```json
/// {"error": {"code": 404, "message": "Requested entity was not found.", "status": "NOT_FOUND",
///   "details": [{"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": "UNREGISTERED"}]}}
/// ```
struct FCMErrorInfo: Sendable, Equatable {
    var httpStatus: Int
    /// `error.status` (`NOT_FOUND`, `INVALID_ARGUMENT`...), nil if the body was not Google's shape.
    var status: String?
    /// The `FcmError` detail's `errorCode` (`UNREGISTERED`, `SENDER_ID_MISMATCH`, `QUOTA_EXCEEDED`...).
    var fcmErrorCode: String?
    var message: String?
    /// `google.rpc.BadRequest` field violations: (field, description).
    var fieldViolations: [(String, String)]

    static func == (a: FCMErrorInfo, b: FCMErrorInfo) -> Bool {
        a.httpStatus == b.httpStatus && a.status == b.status && a.fcmErrorCode == b.fcmErrorCode && a.message == b.message
            && a.fieldViolations.map(\.0) == b.fieldViolations.map(\.0)
    }

    init(httpStatus: Int, body: [UInt8]) {
        self.httpStatus = httpStatus
        fieldViolations = []
        guard let e = (try? JSONValue.parse(body))?["error"] else { return }
        if let s = e.stringValue {  // Some front ends answer {"error": "..."}.
            message = s
            return
        }
        status = e["status"]?.stringValue
        message = e["message"]?.stringValue
        for d in e["details"]?.arrayValue ?? [] {
            let type = d["@type"]?.stringValue ?? ""
            if type.hasSuffix("google.firebase.fcm.v1.FcmError"), let c = d["errorCode"]?.stringValue {
                fcmErrorCode = c
            } else if type.hasSuffix("google.rpc.BadRequest") {
                for v in d["fieldViolations"]?.arrayValue ?? [] {
                    fieldViolations.append((v["field"]?.stringValue ?? "", v["description"]?.stringValue ?? ""))
                }
            }
        }
    }

    /// The code a result reports: the FcmError code, else the status, else the HTTP status.
    var code: String {
        if let fcmErrorCode { return fcmErrorCode }
        if let status { return status }
        switch httpStatus {
        case 400: return "INVALID_ARGUMENT"
        case 401: return "UNAUTHENTICATED"
        case 403: return "PERMISSION_DENIED"
        case 404: return "UNREGISTERED"
        case 429: return "QUOTA_EXCEEDED"
        case 500: return "INTERNAL"
        case 503: return "UNAVAILABLE"
        default: return "HTTP_\(httpStatus)"
        }
    }

    /// Whether a QUOTA_EXCEEDED is about one device's or one topic's message rate ("Device message
    /// rate exceeded", "Topic message rate exceeded") rather than the project's send quota.
    var isTargetRate: Bool {
        let m = (message ?? "").lowercased()
        return m.contains("device message rate") || m.contains("topic message rate")
    }

    /// Whether Google says the registration token itself is malformed or unknown, not the message:
    /// a field violation on `message.token`, or a message about the registration token.
    var isInvalidToken: Bool {
        if fieldViolations.contains(where: { $0.0 == "message.token" }) { return true }
        let m = (message ?? "").lowercased()
        return m.contains("registration token")
    }
}

/// What the provider does with a failed send.
enum FCMFailure: Sendable, Equatable {
    /// The device is gone: mark it inactive with this reason.
    case deactivate(String)
    /// Transient: retry with backoff (honouring Retry-After).
    case retry(String)
    /// Over the project's quota: back off the whole project for at least a minute.
    case quota
    /// Over the message rate of one device or one topic: back off that target only.
    case targetRate
    /// The OAuth2 token was refused: refresh it and retry once.
    case refreshToken
    /// Fails this device only: Google's code and a message for a human.
    case fail(String, String, retryable: Bool)

    /// Maps Google's error to the provider's action.
    ///
    /// UNREGISTERED, SENDER_ID_MISMATCH and INVALID_ARGUMENT about the token deactivate; an
    /// INVALID_ARGUMENT about the message (too big, a bad field) does not.
    static func classify(_ e: FCMErrorInfo) -> FCMFailure {
        switch e.fcmErrorCode {
        case "UNREGISTERED": return .deactivate("UNREGISTERED")
        case "SENDER_ID_MISMATCH": return .deactivate("SENDER_ID_MISMATCH")
        case "QUOTA_EXCEEDED": return e.isTargetRate ? .targetRate : .quota
        case "UNAVAILABLE": return .retry("UNAVAILABLE")
        case "INTERNAL": return .retry("INTERNAL")
        case "THIRD_PARTY_AUTH_ERROR":
            return .fail(
                "THIRD_PARTY_AUTH_ERROR",
                "Google could not deliver through APNs: check the APNs authentication key or certificate configured in the "
                    + "Firebase console (Project settings > Cloud Messaging > Apple app configuration)",
                retryable: false)
        case "INVALID_ARGUMENT":
            return e.isInvalidToken ? .deactivate("INVALID_ARGUMENT") : .fail("INVALID_ARGUMENT", e.detailed, retryable: false)
        default: break
        }
        switch e.httpStatus {
        case 401: return .refreshToken
        case 400 where e.isInvalidToken: return .deactivate("INVALID_ARGUMENT")
        case 429: return e.isTargetRate ? .targetRate : .quota
        case 500, 502, 503, 504: return .retry(e.code)
        default: return .fail(e.code, e.detailed, retryable: false)
        }
    }
}

extension FCMErrorInfo {
    /// Google's message and first field violation, for a failed result's `error` member.
    var detailed: String {
        var s = message ?? "HTTP \(httpStatus)"
        if let v = fieldViolations.first, !v.0.isEmpty { s += " (\(v.0): \(v.1))" }
        return s
    }
}

/// Google's error codes as results' failures (protocol.md section 4, "Reason classes").
///
/// ```swift
/// FCMReasons.failure("UNREGISTERED")   // .invalidToken("UNREGISTERED")
/// ```
enum FCMReasons {
    /// The class of each code Pushline classifies; any other stays `.unknown`.
    static let classes: [Substring: ReasonClass] = [
        "UNREGISTERED": .invalidToken, "SENDER_ID_MISMATCH": .invalidToken, "QUOTA_EXCEEDED": .rateLimited,
        "UNAVAILABLE": .providerError, "INTERNAL": .providerError, "THIRD_PARTY_AUTH_ERROR": .auth, "AUTH_ERROR": .auth,
        "PERMISSION_DENIED": .auth, "INVALID_ARGUMENT": .badRequest,
    ]

    /// A reason the FCM provider reports (Google's code, a transport reason, a token failure).
    static func failure(_ wire: String) -> FailureReason {
        FailureReason.common(wire) ?? failure(parsing: wire) ?? .unknown(wire)
    }

    /// Google's code in `wire` under its class; nil when it is not one Pushline classifies.
    static func failure(parsing wire: String) -> FailureReason? {
        classes[FailureReason.head(wire)].flatMap { FailureReason.classified($0, wire) }
    }
}
