# frozen_string_literal: true

require_relative "lib/pushline/version"

Gem::Specification.new do |spec|
  spec.name = "pushline"
  spec.version = Pushline::VERSION
  spec.summary = "Client for the Pushline push-notification daemon (Unix socket, NDJSON)"
  spec.description = "A thin, standard-library-only client (socket, json) for Pushline: register devices " \
                     "and send APNs, FCM, WebPush and WNS notifications through the local Pushline daemon."
  spec.authors = ["Pushline contributors"]
  spec.license = "MIT"
  spec.required_ruby_version = ">= 3.0"
  spec.files = Dir["lib/**/*.rb"] + ["README.md", "pushline.gemspec"]
  spec.require_paths = ["lib"]
  spec.metadata["rubygems_mfa_required"] = "true"
end
