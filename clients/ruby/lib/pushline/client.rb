# frozen_string_literal: true

require "json"
require "socket"

module Pushline
  # Marker for "argument not given" where +nil+ means JSON null (#update).
  UNSET = Object.new.tap { |o| def o.inspect = "Pushline::UNSET" }.freeze
  # Default of every method's +timeout:+ keyword: the client's own timeout.
  DEFAULT = Object.new.tap { |o| def o.inspect = "Pushline::DEFAULT" }.freeze

  # Merged answers of Client#bulk_send.
  #
  # +errors+ holds one ChunkError per request that failed as a whole (nothing was sent for it).
  BulkResult = Struct.new(:sent, :failed, :results, :errors, :requests, keyword_init: true) do
    def ok? = errors.empty?
  end
  ChunkError = Struct.new(:index, :targets, :error)

  # A client for the Pushline daemon (protocol.md). Responses are Hashes with
  # String keys, exactly as the daemon sent them (without +id+ and +ok+), of the
  # typed subclasses in results.rb (SendResult#sent, #failures, Device#id...).
  #
  #   client = Pushline::Client.new(socket_path: "/run/pushline.sock")
  #   client.register(platform: "fcm", registration_id: token, user: current_user.id)
  #   client.send_message(users: [current_user.id], title: "Hi", message: "Your order shipped")
  #
  # Threads: one connection per thread (fiber-local), opened lazily; share one
  # client between all the threads of a Puma process: a slow send in one thread
  # never holds back another thread's requests.
  #
  # Timeouts: +timeout+ (default 75 s, longer than the daemon's 30 s provider
  # deadline) bounds each request; every method takes its own +timeout:+ too.
  # +connect_timeout+ (default 5 s) bounds connecting and the version check.
  #
  # Reconnecting: when the daemon closed the connection (a restart), the next
  # request opens a new one before writing. When the connection breaks after a
  # request was written, read-only commands and +update+ are re-sent once;
  # others raise ConnectionError with +request_sent+ true (the daemon may have
  # carried them out).
  class Client
    DEFAULT_SOCKET = "./var/pushline.sock"
    DEFAULT_MAX_LINE_BYTES = 1 << 20
    IDEMPOTENT = %w[ping devices stats topics subscribers update job jobs cancel events].freeze
    DEFAULT_TIMEOUT = 75
    DEFAULT_CONNECT_TIMEOUT = 5

    attr_reader :socket_path, :timeout, :connect_timeout

    # +socket_path+ defaults to ENV["PUSHLINE_SOCKET"], then ./var/pushline.sock.
    # +timeout+ (seconds, nil for none) bounds each request's round trip.
    def initialize(socket_path: nil, timeout: DEFAULT_TIMEOUT, connect_timeout: DEFAULT_CONNECT_TIMEOUT)
      @socket_path = socket_path || ENV["PUSHLINE_SOCKET"] || DEFAULT_SOCKET
      @timeout = timeout
      @connect_timeout = [connect_timeout, timeout].compact.min
      @mutex = Mutex.new # guards @conns only: requests run on their thread's own connection
      @conns = {} # Thread => [Connection, ping answer]
      @key = :"pushline_client_#{object_id}"
    end

    # Yields a client and closes it afterwards.
    def self.open(**options)
      client = new(**options)
      return client unless block_given?

      begin
        yield client
      ensure
        client.close
      end
    end

    # Closes every connection of this client (all threads'); it stays usable (it reconnects on the next request).
    def close
      conns = @mutex.synchronize do
        all = @conns.values
        @conns = {}
        all
      end
      conns.each { |conn, _| conn.close }
      nil
    end

    # The ping answer of this thread's connection ("version", "protocol").
    def server
      connection
      Thread.current[@key][1].dup
    end

    # Sends any command; returns the response without "id"/"ok", or raises its error.
    #
    #   client.call("devices", user: "42", limit: 10)
    def call(cmd, timeout: DEFAULT, **arguments)
      request(cmd, stringify(arguments), Result, timeout)
    end

    # +ping+: {"version" => "0.1.0", "protocol" => "1.1"}.
    def ping(timeout: DEFAULT) = request("ping", {}, Result, timeout)

    # +register+: one device from keywords, or many with +devices: [{...}, ...]+ (all or none).
    # Returns a RegisterResult.
    def register(platform: nil, registration_id: nil, app: nil, name: nil, user: nil, device_id: nil,
                 active: nil, p256dh: nil, auth: nil, browser: nil, devices: nil, timeout: DEFAULT)
      single = compact(platform: platform, registration_id: registration_id, app: app, name: name,
                       user: user_arg("user", user), device_id: device_id, active: active, p256dh: p256dh, auth: auth,
                       browser: browser)
      if devices
        raise ArgumentError, "register: pass either devices: [...] or one device's fields, not both" unless single.empty?

        list = list_arg("devices", devices, :object)
        return request("register", { "devices" => list.map { |d| stringify(d) } }, RegisterResult, timeout)
      end
      request("register", stringify(single), RegisterResult, timeout)
    end

    # +unregister+: {"deleted" => n, "not_found" => [...]}.
    def unregister(device: nil, ids: nil, registration_id: nil, registration_ids: nil, platform: nil, app: nil,
                   timeout: DEFAULT)
      request("unregister", stringify(compact(device: device, ids: list_arg("ids", ids, :id),
                                              registration_id: registration_id,
                                              registration_ids: list_arg("registration_ids", registration_ids, :token),
                                              platform: platform, app: app)), Result, timeout)
    end

    # +devices+: one page, a DevicesPage {"devices" => [...], "next" => id or nil}.
    def devices(app: nil, platform: nil, user: nil, active: nil, registration_id: nil, ids: nil, limit: nil,
                after: nil, timeout: DEFAULT)
      request("devices", stringify(compact(app: app, platform: platform, user: user_arg("user", user), active: active,
                                           registration_id: registration_id, ids: list_arg("ids", ids, :id),
                                           limit: limit, after: after)), DevicesPage, timeout)
    end

    # Every device matching the +devices+ filters, page after page (an Enumerator without a block).
    #
    #   client.each_device(user: "42").map { |d| d["id"] }
    def each_device(page_size: 1000, **filters, &block)
      return enum_for(:each_device, page_size: page_size, **filters) unless block

      after = filters.delete(:after)
      loop do
        page = devices(limit: page_size, after: after, **filters)
        page.fetch("devices", []).each(&block)
        after = page["next"]
        break if after.nil?
      end
    end

    # +update+: names a device by +device+ (registry id) or +registration_id+ + +platform+;
    # sets +name+, +user+, +device_id+ (nil clears) and +active+, and (protocol 1.1)
    # +new_registration_id+ (a rotated token: the id and topic subscriptions stay), +p256dh+,
    # +auth+. Returns {"device" => {...}}.
    def update(device: nil, registration_id: nil, platform: nil, app: nil, name: UNSET, user: UNSET,
               device_id: UNSET, active: UNSET, new_registration_id: nil, p256dh: nil, auth: nil, timeout: DEFAULT)
      req = compact(device: device, registration_id: registration_id, platform: platform, app: app,
                    new_registration_id: new_registration_id, p256dh: p256dh, auth: auth)
      { name: name, user: user.nil? || user.equal?(UNSET) ? user : user_arg("user", user), device_id: device_id,
        active: active }.each do |k, v|
        req[k] = v unless v.equal?(UNSET)
      end
      request("update", stringify(req), DeviceAnswer, timeout)
    end

    # +prune+: deletes inactive devices (only those inactive before +inactive_before+:
    # Unix seconds, ISO 8601 String, or a Time). {"deleted" => n}.
    def prune(inactive_before: nil, timeout: DEFAULT)
      value = inactive_before.respond_to?(:utc) ? inactive_before.utc.strftime("%Y-%m-%dT%H:%M:%SZ") : inactive_before
      request("prune", stringify(compact(inactive_before: value)), Result, timeout)
    end

    # +stats+: counts, uptime, connections, pending, notifications.
    def stats(timeout: DEFAULT) = request("stats", {}, Result, timeout)

    # +send+ (named send_message: Object#send is Ruby's own): one notification to one target.
    # Per-device failures are entries with "status" => "failed", not exceptions. Returns a
    # SendResult; +results: "failed"+ or +"none"+ (protocol 1.1) leaves the successes out.
    #
    #   client.send_message(users: ["42"], message: "Your order shipped", badge: 1, extra: { order: 981 })
    #
    # With +async: true+ (protocol 1.2) the daemon answers once the job is durably queued: a
    # JobAccepted (#job_id, #state, #duplicate?). +send_at+ (Unix seconds or a Time) delays
    # delivery; +idempotency_key+ (at most 255 bytes, per app) makes a repeated request return
    # the first job. Both imply +async: true+.
    def send_message(ids: nil, registration_ids: nil, users: nil, filter: nil, platform: nil, app: nil,
                     async: nil, send_at: nil, idempotency_key: nil, timeout: DEFAULT, **notification)
      req = target(ids, registration_ids, users, filter, platform, app).merge(compact(**notification))
      extra = async_args(async, send_at, idempotency_key)
      request("send", stringify(req.merge(extra)), extra.empty? ? SendResult : JobAccepted, timeout)
    end

    # +bulk+: send_message for large target lists, or +messages: [{target + notification}, ...]+.
    # +async+, +send_at+, +idempotency_key+ as for send_message.
    def bulk(ids: nil, registration_ids: nil, users: nil, filter: nil, platform: nil, app: nil, messages: nil,
             async: nil, send_at: nil, idempotency_key: nil, timeout: DEFAULT, **notification)
      req = target(ids, registration_ids, users, filter, platform, app)
      req[:messages] = list_arg("messages", messages, :object).each_with_index.map { |m, i| message_arg(m, i) } if messages
      extra = async_args(async, send_at, idempotency_key)
      request("bulk", stringify(req.merge(compact(**notification)).merge(extra)),
              extra.empty? ? SendResult : JobAccepted, timeout)
    end

    # +topic+: sends to an FCM topic or condition. +async+, +send_at+, +idempotency_key+ as for send_message.
    def topic(topic: nil, condition: nil, app: nil, async: nil, send_at: nil, idempotency_key: nil, timeout: DEFAULT,
              **notification)
      req = compact(topic: topic, condition: condition, app: app).merge(compact(**notification))
      extra = async_args(async, send_at, idempotency_key)
      request("topic", stringify(req.merge(extra)), extra.empty? ? SendResult : JobAccepted, timeout)
    end

    # +job+ (protocol 1.2): a Job (state, counts, times); +results: true+ adds per-device
    # results, paged with +after+/+limit+ (at most 1000) and +next+.
    def job(job, results: nil, after: nil, limit: nil, timeout: DEFAULT)
      raise ArgumentTypeError.new("job", "expected a job id (String), got #{job.class}") unless job.is_a?(String)

      request("job", stringify(compact(job: job, results: results, after: after, limit: limit)), Job, timeout)
    end

    # +jobs+ (protocol 1.2): a JobsPage (filter by +state+, +app+; paged with +after+/+limit+).
    def jobs(state: nil, app: nil, after: nil, limit: nil, timeout: DEFAULT)
      request("jobs", stringify(compact(state: state, app: app, after: after, limit: limit)), JobsPage, timeout)
    end

    # +cancel+ (protocol 1.2): devices of the job not yet sent become canceled; returns the Job.
    def cancel(job, timeout: DEFAULT)
      raise ArgumentTypeError.new("job", "expected a job id (String), got #{job.class}") unless job.is_a?(String)

      request("cancel", { "job" => job }, Job, timeout)
    end

    # +events+ (protocol 1.2), one page: an EventsPage of the events after the cursor +after+,
    # waiting up to +wait_ms+ (at most 60000) when nothing is newer. With the default timeout
    # the call waits at least +wait_ms+ plus 15 s. #events builds the long-polling stream on it.
    def events_page(after: nil, limit: nil, wait_ms: nil, timeout: DEFAULT)
      { "after" => after, "limit" => limit, "wait_ms" => wait_ms }.each do |k, v|
        raise ArgumentTypeError.new(k, "expected an Integer, got #{v.class} #{v.inspect[0, 40]}") unless v.nil? || v.is_a?(Integer)
      end
      if timeout.equal?(DEFAULT) && wait_ms&.positive?
        timeout = @timeout.nil? ? nil : [@timeout, wait_ms / 1000.0 + 15].max
      end
      request("events", stringify(compact(after: after, limit: limit, wait_ms: wait_ms)), EventsPage, timeout)
    end

    # The events feed (protocol 1.2) as an EventStream: an Enumerable of Event from the cursor
    # +after+ (the seq of the last event you handled; 0 for the start), long-polling +wait_ms+ at
    # a time. EventStream#cursor is the seq of the last event yielded: store it after handling
    # each event. The stream polls again after +reconnect_delay+ when the daemon is unreachable
    # or stopping (+reconnect: false+ raises instead); +stop_when_idle: true+ ends at the first
    # poll that finds nothing new. Long-polls hold this thread's connection: use a thread of its own.
    #
    #   stream = client.events(after: Cursor.load)
    #   stream.each do |e|
    #     Device.where(token: e.registration_id).update_all(active: false) if e.type == "device_deactivated"
    #     Cursor.save(stream.cursor)
    #   end
    def events(after: 0, limit: 1000, wait_ms: 30_000, stop_when_idle: false, reconnect: true, reconnect_delay: 1.0)
      EventStream.new(self, after: after, limit: limit, wait_ms: wait_ms, stop_when_idle: stop_when_idle,
                            reconnect: reconnect, reconnect_delay: reconnect_delay)
    end

    # +subscribe+: adds the FCM devices of a target to a topic.
    def subscribe(topic:, app: nil, ids: nil, registration_ids: nil, users: nil, filter: nil, platform: nil,
                  timeout: DEFAULT)
      req = { topic: topic }.merge(target(ids, registration_ids, users, filter, platform, app))
      request("subscribe", stringify(req), SubscribeResult, timeout)
    end

    # +unsubscribe+: removes the FCM devices of a target from a topic.
    def unsubscribe(topic:, app: nil, ids: nil, registration_ids: nil, users: nil, filter: nil, platform: nil,
                    timeout: DEFAULT)
      req = { topic: topic }.merge(target(ids, registration_ids, users, filter, platform, app))
      request("unsubscribe", stringify(req), SubscribeResult, timeout)
    end

    # +topics+: {"devices" => [{"id" => 21, "topics" => [...]}]}.
    def topics(ids: nil, registration_ids: nil, users: nil, filter: nil, platform: nil, app: nil, timeout: DEFAULT)
      request("topics", stringify(target(ids, registration_ids, users, filter, platform, app)), Result, timeout)
    end

    # +subscribers+: {"devices" => [...]} recorded in a topic.
    def subscribers(topic:, app: nil, timeout: DEFAULT)
      request("subscribers", stringify(compact(topic: topic, app: app)), DevicesPage, timeout)
    end

    # Sends one notification to a very large target list with pipelined +bulk+ requests
    # on a dedicated connection (a writer thread keeps up to +window+ requests in flight).
    # +targets+ is any Enumerable of registry ids (+target: :ids+), tokens
    # (+target: :registration_ids+ with +platform:+) or user ids (+target: :users+).
    # Requests answered +busy+ are retried after +retry_after_ms+; other failed requests
    # are collected in +errors+. Returns a BulkResult.
    #
    #   r = client.bulk_send(User.where(opted_in: true).pluck(:id), target: :users, message: "Sale!")
    #   r.sent, r.failed, r.errors.map { |e| e.error.code }
    def bulk_send(targets, chunk: 10_000, target: :ids, platform: nil, app: nil, window: 4, collect_results: true,
                  max_line_bytes: DEFAULT_MAX_LINE_BYTES, busy_retries: 20, **notification)
      target = target.to_s
      raise ArgumentError, "target must be ids, registration_ids or users" unless %w[ids registration_ids users].include?(target)
      if targets.is_a?(String) || targets.is_a?(Numeric) || targets.is_a?(Hash) || !targets.respond_to?(:each)
        raise ArgumentTypeError.new("targets", "expected a list (or Enumerable) of #{target}, got #{targets.class} " \
                                               "#{targets.inspect[0, 40]}")
      end

      common = stringify(compact(platform: platform, app: app, **notification))
      BulkPipeline.new(self, target, common, chunk, window, collect_results, max_line_bytes, busy_retries)
                  .run(targets)
    end

    # @api private: opens a connection and checks the protocol version (used by BulkPipeline too).
    def open_connection
      conn = Connection.new(@socket_path, @connect_timeout)
      begin
        info = result(conn.request({ "cmd" => "ping" }))
      rescue Timeout
        conn.close
        raise ConnectionTimeout.new("no answer to ping from '#{@socket_path}' within #{@connect_timeout} s")
      rescue Error, Closed, SystemCallError, IOError => e
        conn.close
        raise e if e.is_a?(Error)

        raise ConnectionError.new("'#{@socket_path}' failed during the version check: #{e.message}")
      end
      protocol = info["protocol"].to_s
      unless protocol.split(".").first == PROTOCOL_MAJOR
        conn.close
        raise ProtocolVersionError.new(
          "the daemon at '#{@socket_path}' speaks protocol #{protocol.empty? ? '(none)' : protocol}, " \
          "this client speaks #{PROTOCOL_MAJOR}.x: upgrade the client or the daemon",
          details: { "protocol" => protocol, "version" => info["version"] }
        )
      end
      conn.timeout = @timeout
      [conn, info]
    end

    # @api private
    def result(response)
      return response.reject { |k, _| %w[id ok].include?(k) } if response["ok"] == true

      raise Pushline.error_from_response(response["error"])
    end

    private

    def request(cmd, req, klass, timeout)
      timeout = timeout_arg(timeout)
      klass.wrap(result(roundtrip(req.merge("cmd" => cmd.to_s), timeout)))
    end

    # This thread's connection, opened (and registered for #close) when missing or stale.
    def connection(fresh: false)
      entry = Thread.current[@key]
      if entry && (fresh || entry[0].stale?)
        drop
        entry = nil
      end
      unless entry
        entry = open_connection
        Thread.current[@key] = entry
        stale = @mutex.synchronize do
          dead = @conns.keys.reject(&:alive?)
          @conns[Thread.current] = entry
          dead.map { |t| @conns.delete(t) }
        end
        stale.each { |conn, _| conn.close }
      end
      entry[0]
    end

    def drop
      entry = Thread.current[@key]
      Thread.current[@key] = nil
      return unless entry

      @mutex.synchronize { @conns.delete(Thread.current) if @conns[Thread.current].equal?(entry) }
      entry[0].close
    end

    def roundtrip(request, timeout)
      cmd = request["cmd"]
      2.times do |attempt|
        conn = connection(fresh: attempt.positive?)
        conn.timeout = timeout
        begin
          conn.write_request(request)
        rescue Timeout
          drop
          raise ConnectionTimeout.new("writing '#{cmd}' to '#{@socket_path}' timed out", request_sent: true)
        rescue SystemCallError, IOError => e
          drop # EPIPE/ECONNRESET: the daemon had gone and read nothing of this request.
          next if attempt.zero?

          raise ConnectionError.new("cannot write to '#{@socket_path}': #{e.message}")
        end
        begin
          return conn.read_response
        rescue Timeout
          drop
          raise ConnectionTimeout.new("no response to '#{cmd}' within #{timeout} s (the daemon may still carry it out)",
                                      request_sent: true)
        rescue Closed, SystemCallError, IOError => e
          drop
          next if attempt.zero? && IDEMPOTENT.include?(cmd)

          raise ConnectionError.new("'#{@socket_path}' closed the connection before the response to '#{cmd}' " \
                                    "arrived (the daemon may have carried it out): #{e.message}", request_sent: true)
        rescue ConnectionError
          drop
          raise
        end
      end
      raise ConnectionError.new("cannot reach '#{@socket_path}'")
    end

    # The async members of send/bulk/topic; send_at and idempotency_key imply async.
    def async_args(async, send_at, idempotency_key)
      raise ArgumentTypeError.new("async", "expected true or false, got #{async.inspect[0, 40]}") unless [nil, true, false].include?(async)
      unless idempotency_key.nil? || idempotency_key.is_a?(String)
        raise ArgumentTypeError.new("idempotency_key", "expected a String, got #{idempotency_key.class}")
      end

      at = case send_at
           when nil, Numeric then send_at
           when Time then send_at.to_i
           else send_at.respond_to?(:to_time) && !send_at.is_a?(String) ? send_at.to_time.to_i : :bad
           end
      raise ArgumentTypeError.new("send_at", "expected Unix seconds or a Time, got #{send_at.class} #{send_at.inspect[0, 40]}") if at == :bad

      later = !at.nil? || !idempotency_key.nil?
      raise ArgumentTypeError.new("async", "send_at and idempotency_key are for async requests (async: true)") if async == false && later

      out = async || later ? { async: true } : {}
      out.merge(compact(send_at: at&.to_i, idempotency_key: idempotency_key))
    end

    def target(ids, registration_ids, users, filter, platform, app)
      compact(ids: list_arg("ids", ids, :id), registration_ids: list_arg("registration_ids", registration_ids, :token),
              users: list_arg("users", users, :user), filter: filter_arg("filter", filter), platform: platform, app: app)
    end

    LIST_WHAT = { id: "registry ids", token: "tokens", user: "user ids", object: "Hashes" }.freeze

    # A list argument checked before anything is sent: a lone String, number or Hash where a
    # list is expected is refused (users: "42" would otherwise mean users "4" and "2").
    def list_arg(name, value, kind)
      return nil if value.nil?

      what = LIST_WHAT.fetch(kind)
      if value.is_a?(String) || value.is_a?(Numeric) || value.is_a?(Hash) || value.is_a?(Symbol) || !value.respond_to?(:to_a)
        hint = value.is_a?(String) || value.is_a?(Integer) ? " (write #{name}: [#{value.inspect}])" : ""
        raise ArgumentTypeError.new(name, "expected an Array of #{what}, got #{value.class} #{value.inspect[0, 40]}#{hint}")
      end
      value.to_a.each_with_index.map do |v, i|
        ok = case kind
             when :id then v.is_a?(Integer)
             when :token then v.is_a?(String)
             when :user then v.is_a?(String) || v.is_a?(Integer)
             else v.is_a?(Hash)
             end
        raise ArgumentTypeError.new("#{name}[#{i}]", "expected one of #{what}, got #{v.class} #{v.inspect[0, 40]}") unless ok

        kind == :user ? v.to_s : v
      end
    end

    def user_arg(name, value)
      return nil if value.nil?
      raise ArgumentTypeError.new(name, "expected a user id (String or Integer), got #{value.class}") unless value.is_a?(String) || value.is_a?(Integer)

      value.to_s
    end

    def filter_arg(name, value)
      return nil if value.nil?
      raise ArgumentTypeError.new(name, "expected a Hash such as { user: \"42\" }, got #{value.class}") unless value.is_a?(Hash)
      if value.empty?
        raise ArgumentTypeError.new(name, "must name at least one of app, platform, user (filter: { all: true } sends to every device)")
      end

      value
    end

    def message_arg(message, index)
      m = stringify(message)
      { "ids" => :id, "registration_ids" => :token, "users" => :user }.each do |k, kind|
        m[k] = list_arg("messages[#{index}].#{k}", m[k], kind) if m.key?(k)
      end
      m["filter"] = filter_arg("messages[#{index}].filter", m["filter"]) if m.key?("filter")
      m
    end

    def timeout_arg(timeout)
      return @timeout if timeout.equal?(DEFAULT)
      return nil if timeout.nil?
      raise ArgumentTypeError.new("timeout", "expected a positive number of seconds or nil, got #{timeout.inspect[0, 40]}") unless timeout.is_a?(Numeric) && timeout.positive?

      timeout
    end

    def compact(**kwargs)
      kwargs.reject { |_, v| v.nil? || v.equal?(UNSET) }
    end

    def stringify(hash)
      hash.to_h { |k, v| [k.to_s, v] }
    end

    # The daemon closed the connection while a response was awaited.
    class Closed < StandardError; end
    # A read or write exceeded the timeout.
    class Timeout < StandardError; end

    # One Unix-socket connection with a line buffer (used under the client's Mutex).
    class Connection
      attr_reader :sock
      # Seconds each read or write of a request may wait (nil: no limit).
      attr_accessor :timeout

      def initialize(path, timeout)
        @path = path
        @timeout = timeout
        @buf = +"".b
        @next_id = 0
        @pid = Process.pid
        @sock = UNIXSocket.new(path)
      rescue Errno::ENOENT
        raise ConnectionError.new("no Pushline socket at '#{path}' (is the daemon running? set PUSHLINE_SOCKET " \
                                  "or pass socket_path:)", details: { "socket" => path })
      rescue Errno::ECONNREFUSED
        raise ConnectionError.new("connection to '#{path}' refused (stale socket file: is the daemon running?)",
                                  details: { "socket" => path })
      rescue SystemCallError => e
        raise ConnectionError.new("cannot connect to '#{path}': #{e.message}", details: { "socket" => path })
      end

      def close
        @sock&.close
      rescue IOError
        nil
      ensure
        @sock = nil
      end

      # True when the daemon closed the connection (or sent something unasked) while idle.
      def stale?
        return true if @sock.nil? || @pid != Process.pid || !@buf.empty?

        peek = @sock.recv_nonblock(1, Socket::MSG_PEEK, exception: false)
        peek != :wait_readable
      rescue SystemCallError, IOError
        true
      end

      def take_id
        @next_id += 1
      end

      # Writes one request with a fresh id; returns the id.
      def write_request(request)
        id = take_id
        @pending_id = id
        write(JSON.generate({ "id" => id }.merge(request)) << "\n")
        id
      end

      def request(request)
        write_request(request)
        read_response
      end

      def write(data)
        data = data.b
        deadline = @timeout && (monotonic + @timeout)
        until data.empty?
          n = @sock.write_nonblock(data, exception: false)
          if n == :wait_writable
            raise Timeout if !@sock.wait_writable(remaining(deadline)) && deadline

            next
          end
          data = data.byteslice(n..)
        end
      end

      def read_response(id = @pending_id)
        deadline = @timeout && (monotonic + @timeout)
        Client.parse_response(read_line(deadline), id)
      end

      def read_line(deadline)
        scanned = 0
        loop do
          if (i = @buf.index("\n", scanned))
            line = @buf.byteslice(0, i)
            @buf = @buf.byteslice(i + 1..)
            scanned = 0
            return line unless line.strip.empty?

            next
          end
          scanned = @buf.bytesize
          chunk = @sock.read_nonblock(1 << 18, exception: false)
          case chunk
          when :wait_readable
            raise Timeout if !@sock.wait_readable(remaining(deadline)) && deadline
          when nil
            raise Closed, "end of stream"
          else
            @buf << chunk
          end
        end
      end

      private

      def remaining(deadline)
        return nil unless deadline

        r = deadline - monotonic
        r.positive? ? r : 0
      end

      def monotonic = Process.clock_gettime(Process::CLOCK_MONOTONIC)
    end

    # @api private
    def self.parse_response(line, id)
      resp = JSON.parse(line.force_encoding(Encoding::UTF_8))
      raise ConnectionError, "daemon sent a response without 'ok'" unless resp.is_a?(Hash) && resp.key?("ok")
      unless resp["id"] == id || (resp["id"].nil? && resp["ok"] == false)
        raise ConnectionError, "response id #{resp['id'].inspect} does not match request id #{id.inspect}"
      end

      resp
    rescue JSON::ParserError => e
      raise ConnectionError, "daemon sent a line that is not JSON (#{e.message[0, 80]})"
    end
  end

  # The events feed as an Enumerable of Event, long-polling from a cursor (Client#events).
  class EventStream
    include Enumerable

    # Errors after which the stream waits +reconnect_delay+ and polls again.
    TRANSIENT = [ConnectionError, ShuttingDown, Unavailable, Busy].freeze

    # The seq of the last event yielded (+after+ before the first): store it to resume there.
    attr_reader :cursor

    def initialize(client, after:, limit:, wait_ms:, stop_when_idle:, reconnect:, reconnect_delay:)
      raise ArgumentTypeError.new("after", "expected a seq (Integer >= 0), got #{after.inspect[0, 40]}") unless after.is_a?(Integer) && after >= 0

      @client = client
      @cursor = after
      @limit = limit
      @wait_ms = wait_ms
      @stop_when_idle = stop_when_idle
      @reconnect = reconnect
      @reconnect_delay = reconnect_delay
    end

    def each
      return enum_for(:each) unless block_given?

      loop do
        begin
          page = @client.events_page(after: @cursor, limit: @limit, wait_ms: @wait_ms)
        rescue *TRANSIENT
          raise unless @reconnect

          sleep @reconnect_delay
          next
        end
        break if page.events.empty? && @stop_when_idle

        page.events.each do |e|
          @cursor = e.seq
          yield e
        end
      end
      self
    end
  end
end
