# frozen_string_literal: true

# One Pushline client per process. Pushline::Client serializes requests on one
# connection with a Mutex, so it is safe to share between Puma threads; it
# reconnects by itself after a fork or a daemon restart.
require "pushline"

Rails.application.config.pushline_app = ENV.fetch("PUSHLINE_APP", "default")

PUSHLINE = Pushline::Client.new(
  socket_path: ENV.fetch("PUSHLINE_SOCKET", "/run/pushline/pushline.sock"),
  timeout: 5
)
