# frozen_string_literal: true

module Pushline
  # Rails integration, loaded by `require "pushline"` when Rails is present:
  #
  #   # config/application.rb (or an environment file)
  #   config.pushline.socket_path = "/run/pushline/pushline.sock"
  #   config.pushline.timeout = 60
  #
  # and Pushline.client anywhere (controllers, jobs). The process-wide client keeps one
  # connection per thread; after a fork (Puma workers) each process opens its own.
  class Railtie < ::Rails::Railtie
    config.pushline = ActiveSupport::OrderedOptions.new

    initializer "pushline.configure" do |app|
      options = app.config.pushline
      Pushline.configure do |c|
        c.socket_path = options.socket_path || ENV["PUSHLINE_SOCKET"]
        c.timeout = options.timeout if options.key?(:timeout)
        c.connect_timeout = options.connect_timeout if options.key?(:connect_timeout)
        c.app = options.app if options.app
      end
    end
  end
end
