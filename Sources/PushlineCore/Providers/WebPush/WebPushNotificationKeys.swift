/// PushNotification keys only the WebPush provider reads (beyond `PushNotification.commonKeys`).
///
/// - `tag`, `icon`, `image`, `url`: copied into the JSON payload the service worker reads.
/// - `urgency`: `very-low`, `low`, `normal` or `high` (the `Urgency` header; else from `priority`).
/// - `webpush_topic`: the `Topic` header (at most 32 base64url characters; else from `collapse_id`).
/// - `payload`: a raw string (or JSON value) sent instead of the notification's JSON.
/// - `webpush`: an object; `headers` (an object of extra request headers) is the only member read.
public enum WebPushNotificationKeys {
    public static let keys: Set<String> = ["tag", "icon", "image", "url", "urgency", "webpush_topic", "payload", "webpush"]
}
