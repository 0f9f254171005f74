/// Notification keys only the WNS provider reads (beyond `Notification.commonKeys`).
public enum WNSNotificationKeys {
    public static let keys: Set<String> = ["wns_type", "wns_payload", "wns"]
}
