# frozen_string_literal: true

module Pushline
  # Base of every Pushline exception: the protocol error +code+, the human
  # +message+ and the documented +details+ (e.g. +details["field"]+).
  #
  #   begin
  #     client.register(platform: "apns", registration_id: "nothex")
  #   rescue Pushline::InvalidArgument => e
  #     e.field # => "registration_id"
  #   end
  class Error < StandardError
    # +code+: the protocol error code; +details+: the error object's other members;
    # +error_message+: the daemon's message alone (#message is "code: message").
    attr_reader :code, :details, :error_message

    def initialize(message = "", code: nil, details: {})
      @code = code || self.class.const_get(:CODE)
      @details = details
      @error_message = message
      super(message)
    end

    # The argument's key path (+devices[2].registration_id+), when the daemon named one.
    def field
      details["field"]
    end

    def to_s
      "#{code}: #{super}"
    end

    # Whether the same call may succeed if made again later, unchanged (the daemon did nothing).
    def retryable? = self.class::RETRYABLE

    CODE = "internal_error"
    RETRYABLE = false
  end

  # The line was not a JSON object (+bad_json+).
  class BadJSON < Error; CODE = "bad_json"; end

  # The line exceeded +max_line_bytes+ (+line_too_long+); +limit+ in details.
  class LineTooLong < Error
    CODE = "line_too_long"
    def limit = details["limit"]
  end

  # +cmd+ names no command (+unknown_command+).
  class UnknownCommand < Error; CODE = "unknown_command"; end

  # A missing or invalid argument (+invalid_argument+); #field names it.
  class InvalidArgument < Error; CODE = "invalid_argument"; end

  # An argument of the wrong type caught by the client before anything was sent
  # (users: "42" where an Array is expected): an InvalidArgument naming the field.
  class ArgumentTypeError < InvalidArgument
    def initialize(field, message)
      super("field '#{field}': #{message}", code: CODE, details: { "field" => field })
    end
  end

  # The device (or object) named does not exist (+not_found+).
  class NotFound < Error; CODE = "not_found"; end

  # The (app, platform, registration_id) is already registered (+duplicate_registration+).
  class DuplicateRegistration < Error; CODE = "duplicate_registration"; end

  # The app has no credentials for the platform (+provider_not_configured+).
  class ProviderNotConfigured < Error
    CODE = "provider_not_configured"
    def app = details["app"]
    def platform = details["platform"]
  end

  # The notification is over the provider's limit; nothing was sent (+payload_too_large+).
  class PayloadTooLarge < Error
    CODE = "payload_too_large"
    def size = details["size"]
    def limit = details["limit"]
    def platform = details["platform"]
  end

  # Too much work queued; nothing was done (+busy+). Retry after #retry_after_ms.
  class Busy < Error
    CODE = "busy"
    RETRYABLE = true
    def retry_after_ms = details["retry_after_ms"]
  end

  # The daemon is stopping (+shutting_down+).
  class ShuttingDown < Error; CODE = "shutting_down"; RETRYABLE = true; end

  # The connecting user is not in allowed_uids/allowed_gids (+forbidden+); the daemon closes the connection.
  class Forbidden < Error; CODE = "forbidden"; end

  # The daemon cannot store the request now (+unavailable+, protocol 1.2): a full disk, a
  # database error or an unreachable database. Nothing was written; retry after #retry_after_ms.
  class Unavailable < Error
    CODE = "unavailable"
    RETRYABLE = true
    def retry_after_ms = details["retry_after_ms"]
  end

  # A provider-wide failure outside any single device (+provider_error+).
  class ProviderError < Error; CODE = "provider_error"; RETRYABLE = true; end

  # A daemon bug or I/O failure (+internal_error+), or an unknown error code.
  # A rejected request changed nothing (protocol.md section 2), so it may be retried.
  class InternalError < Error; CODE = "internal_error"; RETRYABLE = true; end

  # The socket is missing, refused, closed or timed out. When #request_sent is
  # true the daemon may have carried the request out.
  class ConnectionError < Error
    CODE = "connection_error"
    attr_reader :request_sent

    def initialize(message = "", details: {}, request_sent: false)
      @request_sent = request_sent
      super(message, code: CODE, details: details)
    end

    # True when the request was not written: sending it again cannot do it twice.
    def retryable? = !request_sent
  end

  # No response within the client's timeout.
  class ConnectionTimeout < ConnectionError; end

  # The daemon speaks another protocol major version.
  class ProtocolVersionError < Error; CODE = "protocol_version"; end

  ERROR_CLASSES = [BadJSON, LineTooLong, UnknownCommand, InvalidArgument, NotFound, DuplicateRegistration,
                   ProviderNotConfigured, PayloadTooLarge, Busy, ShuttingDown, Forbidden, Unavailable,
                   ProviderError, InternalError].to_h { |c| [c::CODE, c] }.freeze

  # Builds the exception for a response's +error+ object; unknown codes give InternalError.
  def self.error_from_response(error)
    return InternalError.new("malformed error object: #{error.inspect}") unless error.is_a?(Hash)

    code = error["code"].is_a?(String) ? error["code"] : "internal_error"
    details = error.reject { |k, _| %w[code message].include?(k) }
    ERROR_CLASSES.fetch(code, InternalError).new(error["message"].to_s, code: code, details: details)
  end
end
