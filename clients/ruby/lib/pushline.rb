# frozen_string_literal: true

# Pushline: a standard-library-only client for the Pushline push-notification daemon.
#
#   require "pushline"
#   client = Pushline::Client.new                     # ENV["PUSHLINE_SOCKET"] or ./var/pushline.sock
#   # or, process-wide: Pushline.configure { |c| c.socket_path = "..." }; client = Pushline.client
#   client.register(platform: "fcm", registration_id: token, user: 42)
#   client.send_message(users: [42], title: "Hello", message: "Your order shipped")
#
# See protocol.md in the Pushline repository for every command and error code.
module Pushline
end

require_relative "pushline/version"
require_relative "pushline/errors"
require_relative "pushline/results"
require_relative "pushline/client"
require_relative "pushline/bulk_pipeline"
require_relative "pushline/configuration"
require_relative "pushline/railtie" if defined?(Rails::Railtie)
