# frozen_string_literal: true

module Pushline
  # The gem's version.
  VERSION = "0.2.0"
  # The protocol major version this client speaks (protocol.md section 7).
  PROTOCOL_MAJOR = "1"
end
