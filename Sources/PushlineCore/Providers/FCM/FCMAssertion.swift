/// Signs the OAuth2 JWT assertion of a service account (RS256, with the shared crypto's `JWT.rs256`).
///
/// ```
/// header {"alg": "RS256", "typ": "JWT", "kid": <private_key_id>}
/// claims {"iss": <client_email>, "scope": ".../auth/firebase.messaging", "aud": <token_uri>, "iat": now, "exp": now + 3600}
/// ```
enum FCMAssertion {
    /// Parses the service account's key once (at startup, so a bad file is a config error).
    static func key(_ pem: [UInt8]) -> Result<RSAPrivateKey, CryptoError> {
        do { return .success(try RSAPrivateKey(pem: pem)) } catch { return .failure(error) }
    }

    /// The signed compact JWT, or why it could not be signed.
    static func sign(header: JSONObject, claims: JSONObject, key: RSAPrivateKey) -> Result<String, FCMAuthError> {
        do {
            return .success(try JWT.rs256(header: header, claims: claims, key: key))
        } catch {
            return .failure(FCMAuthError("cannot sign the service-account assertion: \(error)", retryable: false))
        }
    }
}
