/// Apple's `reason` strings (APNs error responses), with a fallback for reasons Apple adds later.
///
/// ```swift
/// APNsError(reason: "Unregistered").deactivatesDevice // true
/// APNsError(reason: "Whatever").reason                 // "Whatever"
/// ```
public enum APNsError: Sendable, Equatable {
    case badCollapseId, badDeviceToken, badExpirationDate, badMessageId, badPriority, badTopic
    case deviceTokenNotForTopic, duplicateHeaders, idleTimeout, invalidPushType, missingDeviceToken, missingTopic
    case payloadEmpty, topicDisallowed
    case badCertificate, badCertificateEnvironment, expiredProviderToken, forbidden, invalidProviderToken
    case missingProviderToken, unrelatedKeyIdInToken, badEnvironmentKeyInToken
    case badPath, methodNotAllowed, expiredToken, unregistered, payloadTooLarge
    case tooManyProviderTokenUpdates, tooManyRequests, internalServerError, serviceUnavailable, shutdown
    case unknown(String)

    static let table: [(String, APNsError)] = [
        ("BadCollapseId", .badCollapseId), ("BadDeviceToken", .badDeviceToken), ("BadExpirationDate", .badExpirationDate),
        ("BadMessageId", .badMessageId), ("BadPriority", .badPriority), ("BadTopic", .badTopic),
        ("DeviceTokenNotForTopic", .deviceTokenNotForTopic), ("DuplicateHeaders", .duplicateHeaders),
        ("IdleTimeout", .idleTimeout), ("InvalidPushType", .invalidPushType), ("MissingDeviceToken", .missingDeviceToken),
        ("MissingTopic", .missingTopic), ("PayloadEmpty", .payloadEmpty), ("TopicDisallowed", .topicDisallowed),
        ("BadCertificate", .badCertificate), ("BadCertificateEnvironment", .badCertificateEnvironment),
        ("ExpiredProviderToken", .expiredProviderToken), ("Forbidden", .forbidden),
        ("InvalidProviderToken", .invalidProviderToken), ("MissingProviderToken", .missingProviderToken),
        ("UnrelatedKeyIdInToken", .unrelatedKeyIdInToken), ("BadEnvironmentKeyInToken", .badEnvironmentKeyInToken),
        ("BadPath", .badPath), ("MethodNotAllowed", .methodNotAllowed), ("ExpiredToken", .expiredToken),
        ("Unregistered", .unregistered), ("PayloadTooLarge", .payloadTooLarge),
        ("TooManyProviderTokenUpdates", .tooManyProviderTokenUpdates), ("TooManyRequests", .tooManyRequests),
        ("InternalServerError", .internalServerError), ("ServiceUnavailable", .serviceUnavailable), ("Shutdown", .shutdown),
    ]

    public init(reason: String) {
        self = Self.table.first { $0.0 == reason }?.1 ?? .unknown(reason)
    }

    /// Apple's reason string.
    public var reason: String {
        if case .unknown(let s) = self { return s }
        return Self.table.first { $0.1 == self }?.0 ?? "Unknown"
    }

    /// The device token is gone for good: mark the device inactive.
    public var deactivatesDevice: Bool {
        switch self {
        case .unregistered, .expiredToken, .badDeviceToken, .deviceTokenNotForTopic: return true
        default: return false
        }
    }

    /// A credentials problem (403 other than an expired provider token): every send of the app fails the same way.
    public var isConfigurationError: Bool {
        switch self {
        case .badCertificate, .badCertificateEnvironment, .forbidden, .invalidProviderToken, .missingProviderToken,
            .unrelatedKeyIdInToken, .badEnvironmentKeyInToken:
            return true
        default: return false
        }
    }
}

/// Apple's error body: `{"reason": "...", "timestamp": ms}`.
struct APNsErrorBody {
    var reason: String?
    var timestamp: Int64?

    init(_ body: [UInt8]) {
        guard !body.isEmpty, let v = try? JSONValue.parse(body) else { return }
        reason = v["reason"]?.stringValue
        timestamp = v["timestamp"]?.intValue
    }
}

extension APNsError {
    /// The class Pushline gives Apple's reason (protocol.md section 4, "Reason classes").
    public var reasonClass: ReasonClass {
        switch self {
        case .badDeviceToken, .unregistered, .expiredToken, .deviceTokenNotForTopic: return .invalidToken
        case .tooManyRequests, .tooManyProviderTokenUpdates: return .rateLimited
        case .internalServerError, .serviceUnavailable, .shutdown: return .providerError
        case .invalidProviderToken, .expiredProviderToken, .missingProviderToken, .forbidden, .badCertificate,
            .badCertificateEnvironment:
            return .auth
        case .topicDisallowed, .badTopic, .missingTopic, .invalidPushType: return .configuration
        case .payloadTooLarge, .payloadEmpty, .badCollapseId, .badExpirationDate, .badMessageId, .badPriority, .badPath,
            .methodNotAllowed, .duplicateHeaders, .missingDeviceToken:
            return .badRequest
        case .idleTimeout, .unrelatedKeyIdInToken, .badEnvironmentKeyInToken, .unknown: return .unknown
        }
    }

    /// This reason as a result's failure, with `wire` (Apple's reason and an explanation after
    /// ": ") as the protocol's `reason`; Apple's reason alone when nil. A reason Apple added
    /// later stays `.unknown` (or its HTTP status's class: `HTTP 500`).
    public func failure(_ wire: String? = nil) -> FailureReason {
        let w = wire ?? reason
        if case .unknown = self { return FailureReason.common(w) ?? .unknown(w) }
        return FailureReason.classified(reasonClass, w) ?? .unknown(w)
    }

    /// A wire string the APNs provider wrote, read back (`BadDeviceToken: not a hexadecimal...`,
    /// `cannot sign the APNs provider token ...`); nil when it is not one.
    static func failure(parsing wire: String) -> FailureReason? {
        if wire.hasPrefix("cannot sign") { return .auth(wire) }
        let e = APNsError(reason: String(FailureReason.head(wire)))
        if case .unknown = e { return FailureReason.head(wire) == "BadDate" ? .badRequest(wire) : nil }
        return e.failure(wire)
    }
}
