# frozen_string_literal: true

module Pushline
  # Process-wide settings for Pushline.client (see Pushline.configure).
  class Configuration
    # Daemon socket (default: ENV["PUSHLINE_SOCKET"], then ./var/pushline.sock).
    attr_accessor :socket_path
    # Seconds per request (default 75: longer than the daemon's 30 s provider deadline).
    attr_accessor :timeout
    # Seconds to connect and check the version (default 5).
    attr_accessor :connect_timeout
    # The app name in the daemon's config that your calls use when they name none (informative;
    # pass app: to calls). Default ENV["PUSHLINE_APP"] or "default".
    attr_accessor :app

    def initialize
      @socket_path = nil
      @timeout = Client::DEFAULT_TIMEOUT
      @connect_timeout = Client::DEFAULT_CONNECT_TIMEOUT
      @app = ENV.fetch("PUSHLINE_APP", "default")
    end
  end

  @config_lock = Mutex.new

  class << self
    # Sets the process-wide client's options; the next Pushline.client call uses them.
    #
    #   Pushline.configure do |c|
    #     c.socket_path = "/run/pushline/pushline.sock"
    #     c.timeout = 60
    #   end
    #   Pushline.client.send_message(users: [user.id], message: "Hi")
    def configure
      @config_lock.synchronize do
        @configuration ||= Configuration.new
        yield @configuration
        old = @client
        @client = nil
        old&.close
      end
      self
    end

    def configuration
      @config_lock.synchronize { @configuration ||= Configuration.new }
    end

    # The process-wide Client built from the configuration (one connection per thread,
    # so one client serves every thread of a Puma process).
    def client
      @config_lock.synchronize do
        @configuration ||= Configuration.new
        @client ||= Client.new(socket_path: @configuration.socket_path, timeout: @configuration.timeout,
                               connect_timeout: @configuration.connect_timeout)
      end
    end

    # Forgets the configuration and closes the process-wide client (tests).
    def reset!
      @config_lock.synchronize do
        @client&.close
        @client = nil
        @configuration = nil
      end
    end
  end
end
