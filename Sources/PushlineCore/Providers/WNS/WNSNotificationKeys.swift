/// PushNotification keys only the WNS provider reads (beyond `PushNotification.commonKeys`).
///
/// - `wns_type`: `toast` (default), `tile`, `badge` or `raw`.
/// - `wns_payload`: the XML (toast, tile, badge) or raw body to send as is.
/// - `wns`: an object of extra WNS headers, by short name (`ttl`, `tag`, `group`,
///   `cache_policy`, `suppress_popup`, `request_for_status`, `priority`) or by full
///   header name (`X-WNS-Tag`).
public enum WNSNotificationKeys {
    public static let keys: Set<String> = ["wns_type", "wns_payload", "wns"]
}
