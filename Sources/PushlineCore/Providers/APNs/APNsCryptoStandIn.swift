// TEMPORARY stand-in for the crypto branch's API so the APNs provider builds before
// crypto is merged. Deleted in the commit that merges branch `crypto`. Every call fails.
public struct CryptoError: Error, Sendable, CustomStringConvertible {
    public var message: String
    public init(message: String) { self.message = message }
    public var description: String { message }
}
public final class ECPrivateKey: Sendable {
    public init(pem: [UInt8], password: String? = nil) throws(CryptoError) {
        throw CryptoError(message: "crypto not merged yet")
    }
}
public enum JWT {
    public static func es256(header: JSONObject, claims: JSONObject, key: ECPrivateKey) throws(CryptoError) -> String {
        throw CryptoError(message: "crypto not merged yet")
    }
}
