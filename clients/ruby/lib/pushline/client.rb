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
    IDEMPOTENT = %w[ping devices stats topics subscribers update].freeze
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
    def send_message(ids: nil, registration_ids: nil, users: nil, filter: nil, platform: nil, app: nil,
                     timeout: DEFAULT, **notification)
      req = target(ids, registration_ids, users, filter, platform, app).merge(compact(**notification))
      request("send", stringify(req), SendResult, timeout)
    end

    # +bulk+: send_message for large target lists, or +messages: [{target + notification}, ...]+.
    def bulk(ids: nil, registration_ids: nil, users: nil, filter: nil, platform: nil, app: nil, messages: nil,
             timeout: DEFAULT, **notification)
      req = target(ids, registration_ids, users, filter, platform, app)
      req[:messages] = list_arg("messages", messages, :object).each_with_index.map { |m, i| message_arg(m, i) } if messages
      request("bulk", stringify(req.merge(compact(**notification))), SendResult, timeout)
    end

    # +topic+: sends to an FCM topic or condition.
    def topic(topic: nil, condition: nil, app: nil, timeout: DEFAULT, **notification)
      req = compact(topic: topic, condition: condition, app: app).merge(compact(**notification))
      request("topic", stringify(req), SendResult, timeout)
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
end
