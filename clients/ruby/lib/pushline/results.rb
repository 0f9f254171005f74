# frozen_string_literal: true

module Pushline
  # Typed results: the daemon's answer as a Hash (String keys, exactly what it sent, so
  # code written for plain Hashes keeps working) with reader methods for the documented
  # members. #to_h gives a plain Hash.
  #
  #   r = client.send_message(users: [42], message: "Hi")
  #   r.sent                                      # => 1, same as r["sent"]
  #   r.failures.map { |x| [x.id, x.reason_class] } # => [[21, "invalid_token"]]
  class Result < Hash
    def self.wrap(hash)
      new.replace(hash).tap(&:wrap_members)
    end

    # Readers for members (nil when absent).
    def self.members(*names)
      names.each { |n| define_method(n) { self[n.to_s] } }
    end

    # @api private
    def wrap_members; end

    def inspect = "#<#{self.class.name} #{super}>"

    private

    def wrap_list(key, klass)
      list = self[key]
      return unless list.is_a?(Array)

      list.map! { |x| x.is_a?(Hash) && !x.is_a?(klass) ? klass.wrap(x) : x }
    end
  end

  # A registry device (protocol.md section 5.2).
  class Device < Result
    members :id, :platform, :app, :registration_id, :name, :user, :device_id, :created_at, :updated_at,
            :inactive_reason, :inactive_at, :p256dh, :auth, :browser

    def active? = fetch("active", true) == true
  end

  # One device's outcome in send/bulk/topic/subscribe. +id+, +platform+, +app+ and
  # +registration_id+ may be nil (a target that is not registered); +reason+,
  # +reason_class+, +retryable+ and +deactivated+ are set on failures only.
  class DeviceResult < Result
    members :id, :platform, :app, :registration_id, :status, :reason, :reason_class

    def ok? = self["status"] != "failed"
    def retryable? = self["retryable"] == true
    def deactivated? = self["deactivated"] == true

    # bulk with messages: the index of the message this result belongs to.
    def message_index
      v = key?("message_index") ? self["message_index"] : self["message"]
      v.is_a?(Integer) ? v : nil
    end
  end

  # The answer to send/bulk/topic: counts and one DeviceResult per device.
  class SendResult < Result
    def sent = fetch("sent", 0)
    def failed = fetch("failed", 0)
    def results = fetch("results", [])
    def failures = results.reject(&:ok?)
    def successes = results.select(&:ok?)

    # @api private
    def wrap_members = wrap_list("results", DeviceResult)
  end

  # The answer to subscribe/unsubscribe.
  class SubscribeResult < SendResult
    def succeeded = fetch("succeeded", 0)
    def sent = succeeded
  end

  # The answer to register: one +device+ (+created+/+updated+ booleans) or a batch's
  # +devices+ (+created+/+updated+ counts).
  class RegisterResult < Result
    members :created, :updated, :device

    def devices = fetch("devices") { device ? [device] : [] }

    # @api private
    def wrap_members
      self["device"] = Device.wrap(self["device"]) if self["device"].is_a?(Hash)
      wrap_list("devices", Device)
    end
  end

  # The answer to devices/subscribers: a page and the +next+ cursor (nil on the last page).
  class DevicesPage < Result
    members :next

    def devices = fetch("devices", [])

    # @api private
    def wrap_members = wrap_list("devices", Device)
  end

  # The answer to update: +device+.
  class DeviceAnswer < Result
    members :device

    # @api private
    def wrap_members
      self["device"] = Device.wrap(self["device"]) if self["device"].is_a?(Hash)
    end
  end

  # The answer to an async send_message/bulk/topic (protocol 1.2): the job is durably queued.
  #
  #   r = client.send_message(users: [42], message: "Hi", async: true)
  #   r.job_id, r.state, r.duplicate?   # => ["j1", "queued", false]
  class JobAccepted < Result
    def job = self["job"].is_a?(Hash) ? self["job"] : {}
    def job_id = job["id"]
    def state = job["state"]
    # An earlier request with the same idempotency_key made this job; nothing new was queued.
    def duplicate? = self["duplicate"] == true
  end

  # The answer to job and cancel (protocol 1.2): state, counts (devices, sent, failed, pending,
  # canceled) and times; with +results: true+ also per-device +results+ and +next+. The job's
  # members are read at the top level or under "job", whichever the daemon sends.
  class Job < Result
    %w[id state devices sent failed pending canceled created_at started_at finished_at].each do |n|
      define_method(n) { (self["job"].is_a?(Hash) ? self["job"] : self)[n] }
    end

    # The job is over (done or canceled).
    def done? = %w[done canceled].include?(state)
    def results = fetch("results", [])
    def next = self["next"]

    # @api private
    def wrap_members = wrap_list("results", DeviceResult)
  end

  # The answer to jobs: +jobs+ (each a Job) and the +next+ cursor (nil on the last page).
  class JobsPage < Result
    members :next

    def jobs = fetch("jobs", [])

    # @api private
    def wrap_members = wrap_list("jobs", Job)
  end

  # One entry of the events feed (protocol 1.2): +seq+, +type+, +at+ (RFC 3339 UTC) and the
  # type's members (+device+, +app+, +platform+, +registration_id+, +reason+; +job+).
  class Event < Result
    members :seq, :type, :at, :device, :app, :platform, :registration_id, :reason, :job
  end

  # The answer to events: +events+ (each an Event) and +next+, the cursor to pass as +after+.
  class EventsPage < Result
    members :next

    def events = fetch("events", [])

    # @api private
    def wrap_members = wrap_list("events", Event)
  end
end
