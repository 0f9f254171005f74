/// PushNotification keys only the FCM provider reads (beyond `PushNotification.commonKeys`).
public enum FCMNotificationKeys {
    public static let keys: Set<String> = [
        "use_fcm_notifications", "image", "icon", "color", "tag", "click_action", "body_loc_key", "body_loc_args",
        "title_loc_key", "title_loc_args", "channel_id", "android", "apns", "webpush", "fcm_options", "data", "fcm",
        "analytics_label",
    ]
}
