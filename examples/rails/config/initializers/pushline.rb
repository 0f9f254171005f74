# frozen_string_literal: true

# The pushline gem's Railtie reads config.pushline (see config/application.rb or set
# PUSHLINE_SOCKET); this initializer shows the same with Pushline.configure. The
# process-wide Pushline.client keeps one connection per Puma thread (a slow send never
# blocks another thread's registration) and reconnects after a fork or a daemon restart.
require "pushline"

Pushline.configure do |c|
  c.socket_path = ENV.fetch("PUSHLINE_SOCKET", "/run/pushline/pushline.sock")
  c.timeout = 75 # seconds per request: longer than the daemon's 30 s provider deadline
  c.app = ENV.fetch("PUSHLINE_APP", "default")
end
