/// Compact JWS (RFC 7515) tokens signed with ES256 or RS256, as APNs, FCM and VAPID need.
///
/// The header gets `"alg"` first (replacing any `alg` given); the caller supplies
/// `kid`/`typ`. The result is `base64url(header).base64url(claims).base64url(signature)`.
///
/// ```swift
/// let token = try JWT.es256(header: ["kid": "ABC123DEFG"],
///                           claims: ["iss": "DEF123GHIJ", "iat": 1_700_000_000], key: key)
/// ```
public enum JWT {
    /// An ES256 token (signature is raw r||s, 64 bytes).
    public static func es256(header: JSONObject, claims: JSONObject, key: ECPrivateKey) throws(CryptoError) -> String {
        let input = signingInput(alg: "ES256", header: header, claims: claims)
        let sig = try key.signES256(Array(input.utf8))
        return input + "." + Base64URL.encode(sig)
    }

    /// An RS256 token.
    public static func rs256(header: JSONObject, claims: JSONObject, key: RSAPrivateKey) throws(CryptoError) -> String {
        let input = signingInput(alg: "RS256", header: header, claims: claims)
        let sig = try key.signRS256(Array(input.utf8))
        return input + "." + Base64URL.encode(sig)
    }

    /// `base64url(header).base64url(claims)` with `alg` put first in the header.
    static func signingInput(alg: String, header: JSONObject, claims: JSONObject) -> String {
        var h = JSONObject([("alg", .string(alg))])
        for (k, v) in header.pairs where k != "alg" { h.pairs.append((k, v)) }
        return Base64URL.encode(JSONValue.object(h).serialized()) + "." + Base64URL.encode(JSONValue.object(claims).serialized())
    }
}
