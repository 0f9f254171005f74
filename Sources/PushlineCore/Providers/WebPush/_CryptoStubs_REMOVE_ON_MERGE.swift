// TEMPORARY compile-only stand-ins for the crypto branch's API; deleted when `crypto` is merged.
public struct CryptoError: Error, Sendable, CustomStringConvertible {
    public var message: String
    public var description: String { message }
}
public final class ECPrivateKey: @unchecked Sendable {
    public let publicKeyUncompressed: [UInt8] = []
    public init(pem: [UInt8], password: String? = nil) throws(CryptoError) { throw CryptoError(message: "stub") }
    public static func generate() throws(CryptoError) -> ECPrivateKey { throw CryptoError(message: "stub") }
    public func pkcs8PEM() throws(CryptoError) -> String { throw CryptoError(message: "stub") }
    public func signES256(_ m: [UInt8]) throws(CryptoError) -> [UInt8] { throw CryptoError(message: "stub") }
}
public final class P256PublicKey: @unchecked Sendable {
    public let uncompressed: [UInt8] = []
    public init(uncompressed: [UInt8]) throws(CryptoError) { throw CryptoError(message: "stub") }
}
public enum WebPushCrypto {
    public static func encrypt(_ plaintext: [UInt8], to subscriber: P256PublicKey, authSecret: [UInt8], paddingLength: Int = 0,
                               salt: [UInt8]? = nil, senderKey: ECPrivateKey? = nil) throws(CryptoError) -> [UInt8] { throw CryptoError(message: "stub") }
    public static func decrypt(_ body: [UInt8], subscriberKey: ECPrivateKey, authSecret: [UInt8]) throws(CryptoError) -> [UInt8] { throw CryptoError(message: "stub") }
}
public enum JWT {
    public static func es256(header: JSONObject, claims: JSONObject, key: ECPrivateKey) throws(CryptoError) -> String { throw CryptoError(message: "stub") }
}
public enum Digest {
    public static func sha256(_ b: [UInt8]) -> [UInt8] { [UInt8](repeating: 0, count: 32) }
}
public enum Base64URL {
    public static func encode(_ b: [UInt8]) -> String { "" }
    public static func decode(_ s: String) -> [UInt8]? { nil }
}
