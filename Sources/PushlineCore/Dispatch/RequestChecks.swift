/// Checks shared by several commands: apps the config names, and the `results` option of
/// `send`/`bulk` (protocol.md sections 3 and 4).
extension Dispatcher {
    /// Which per-device results a `send`/`bulk` answers with (`results` argument).
    enum ResultsMode: String, Sendable {
        /// Every device's result (the default).
        case all
        /// Only failed results; `sent`/`failed` still count every device.
        case failed
        /// No results (`"results": []`); only the counts.
        case none
    }

    /// The `results` option of the `send`/`bulk` being run (a task local, so every chunk task of
    /// the pipeline sees it without being handed it).
    @TaskLocal static var resultsMode: ResultsMode = .all

    /// Reads `results` and runs `body` with it in effect.
    func withResultsMode(
        _ a: inout Arguments, _ body: (inout Arguments) async throws(CommandError) -> JSONObject
    ) async throws(CommandError) -> JSONObject {
        var mode = ResultsMode.all
        if let s = try a.string("results") {
            guard let m = ResultsMode(rawValue: s) else {
                throw .invalid("results", "expected one of \"all\", \"failed\", \"none\", got \"\(s.prefix(40))\"")
            }
            mode = m
        }
        if mode == .all { return try await body(&a) }
        var outcome: Result<JSONObject, CommandError> = .failure(CommandError(.internalError, "send did not run"))
        await Self.$resultsMode.withValue(mode) {
            do throws(CommandError) {
                outcome = .success(try await body(&a))
            } catch {
                outcome = .failure(error)
            }
        }
        return try outcome.get()
    }

    /// The configured app names, sorted, for error messages.
    var configuredApps: [String] { config.apps.keys.sorted() }

    /// An app the config does not name: `code` (`invalid_argument` for `register`,
    /// `provider_not_configured` for commands that send) naming the configured apps.
    func unknownApp(_ app: String, field: String, code: CommandError.Code) -> CommandError {
        let names = configuredApps
        let shown = app.count > 64 ? String(app.prefix(64)) + "..." : app
        var details: JSONObject = ["field": .string(field), "app": .string(shown), "apps": .array(names.map { .string($0) })]
        if code == .providerNotConfigured { details["platform"] = .null }
        return CommandError(
            code, "field '\(field)': app '\(shown)' is not configured (configured apps: \(names.joined(separator: ", ")))",
            details: details)
    }

    /// Refuses a request naming an app the config does not have, before anything else is read:
    /// `register` (top level and `devices[i]`) and the commands that send or subscribe (top
    /// level, `filter`, `messages[i]` and their `filter`). Listing, `update` and `unregister`
    /// keep working for devices of an app since removed from the config.
    func checkApps(cmd: String, _ request: JSONObject) throws(CommandError) {
        let code: CommandError.Code
        switch cmd {
        case "register": code = .invalidArgument
        case "send", "bulk", "topic", "subscribe", "unsubscribe": code = .providerNotConfigured
        default: return
        }
        func check(_ o: JSONObject, _ prefix: String) throws(CommandError) {
            if case .string(let app)? = o["app"], config.apps[app] == nil {
                throw unknownApp(app, field: prefix + "app", code: code)
            }
            if let f = o["filter"]?.objectValue, case .string(let app)? = f["app"], config.apps[app] == nil {
                throw unknownApp(app, field: prefix + "filter.app", code: code)
            }
        }
        try check(request, "")
        for key in ["devices", "messages"] {
            guard let list = request[key]?.arrayValue else { continue }
            for (i, v) in list.enumerated() {
                if let o = v.objectValue { try check(o, "\(key)[\(i)].") }
            }
        }
    }

    /// A failed result's `reason_class` (see `ReasonClass`).
    static func reasonClass(_ r: DeliveryResult) -> String {
        r.reasonClass.rawValue
    }
}
