/// PushNotification keys only the APNs provider reads (beyond `PushNotification.commonKeys`).
public enum APNsNotificationKeys {
    public static let keys: Set<String> = [
        "subtitle", "launch_image", "title_loc_key", "title_loc_args", "subtitle_loc_key", "subtitle_loc_args",
        "loc_key", "loc_args", "action_loc_key", "target_content_id", "interruption_level", "relevance_score",
        "filter_criterion", "timestamp", "event", "content_state", "stale_date", "dismissal_date", "attributes_type",
        "attributes", "apns_id", "badges", "url_args", "apns",
    ]
}
