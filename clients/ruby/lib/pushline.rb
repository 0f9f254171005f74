# frozen_string_literal: true

# Pushline: a standard-library-only client for the Pushline push-notification daemon.
#
#   require "pushline"
#   client = Pushline::Client.new                     # ENV["PUSHLINE_SOCKET"] or ./var/pushline.sock
#   client.register(platform: "fcm", registration_id: token, user: 42)
#   client.send_message(users: [42], title: "Hello", message: "Your order shipped")
#
# See protocol.md in the Pushline repository for every command and error code.
module Pushline
end

require_relative "pushline/version"
require_relative "pushline/errors"
require_relative "pushline/client"
require_relative "pushline/bulk_pipeline"
