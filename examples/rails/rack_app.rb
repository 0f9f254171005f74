# frozen_string_literal: true

# The Rails example's flow as one plain Rack application (no Rails, no gems
# beyond Ruby's standard library; WEBrick serves it when run directly):
#
#   PUSHLINE_SOCKET=/tmp/pushline.sock ruby -I ../../clients/ruby/lib rack_app.rb
#   curl -d '{"user":"42","platform":"fcm","registration_id":"dXy-token"}' localhost:9292/devices
#   curl -d '{"user":"42","message":"Your order shipped"}' localhost:9292/notify
#
# In a real app the user comes from the session, not from the request body.
require "json"
require "pushline"

# A Rack app: #call(env) returns [status, headers, body].
class PushlineRackApp
  DEVICE_FIELDS = %w[platform registration_id name device_id p256dh auth browser].freeze

  def initialize(client = Pushline::Client.new)
    @pushline = client
  end

  def call(env)
    return json(405, error: "POST only") unless env["REQUEST_METHOD"] == "POST"

    body = JSON.parse(env["rack.input"].read)
    return json(400, error: "body must be a JSON object") unless body.is_a?(Hash)

    case env["PATH_INFO"]
    when "/devices" then register(body)
    when "/notify" then notify(body)
    else json(404, error: "not found")
    end
  rescue JSON::ParserError
    json(400, error: "body must be JSON")
  rescue Pushline::ConnectionError
    json(503, error: "notifications are unavailable")
  end

  private

  # A token registered already belongs to whoever registered it last (the phone changed
  # hands or accounts): it is re-assigned to this user, and no other user's data is returned.
  def register(body)
    fields = body.slice(*DEVICE_FIELDS).transform_keys(&:to_sym)
    reg = @pushline.register(user: body["user"], **fields)
    json(201, device: reg["device"])
  rescue Pushline::DuplicateRegistration
    json(200, device: reassign(body["user"].to_s, fields))
  rescue Pushline::InvalidArgument => e
    json(422, error: e.error_message, field: e.field)
  end

  # The user's own device keeps what they did not resend; another user's device gets this
  # user's name and device id (or none).
  def reassign(user, fields)
    key = { platform: fields[:platform], registration_id: fields[:registration_id] }
    found = @pushline.devices(**key)["devices"].first
    mine = found && found["user"] == user
    changes = { user: user, active: true }
    %i[name device_id].each { |k| changes[k] = fields[k] if fields.key?(k) || !mine }
    %i[p256dh auth].each { |k| changes[k] = fields[k] if fields.key?(k) }
    @pushline.update(**key, **changes)["device"]
  end

  def notify(body)
    result = @pushline.send_message(users: [body["user"]], title: body["title"], message: body["message"])
    json(200, sent: result["sent"], failed: result["failed"])
  rescue Pushline::ProviderNotConfigured => e
    json(409, error: e.error_message, app: e.app, platform: e.platform)
  rescue Pushline::InvalidArgument => e
    json(422, error: e.error_message, field: e.field)
  end

  def json(status, **body)
    [status, { "content-type" => "application/json" }, [JSON.generate(body)]]
  end
end

if $PROGRAM_NAME == __FILE__
  require "stringio"
  require "webrick"

  app = PushlineRackApp.new
  server = WEBrick::HTTPServer.new(Port: Integer(ENV.fetch("PORT", "9292")))
  server.mount_proc("/") do |req, res|
    env = { "REQUEST_METHOD" => req.request_method, "PATH_INFO" => req.path,
            "rack.input" => StringIO.new(req.body || "") }
    res.status, headers, body = app.call(env)
    headers.each { |k, v| res[k] = v }
    res.body = body.join
  end
  trap("INT") { server.shutdown }
  server.start
end
