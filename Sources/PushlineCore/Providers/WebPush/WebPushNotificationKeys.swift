/// Notification keys only the WebPush provider reads (beyond `Notification.commonKeys`).
public enum WebPushNotificationKeys {
    public static let keys: Set<String> = ["tag", "icon", "image", "url", "urgency", "webpush_topic", "payload", "webpush"]
}
