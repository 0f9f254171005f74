# frozen_string_literal: true

require "json"
require "socket"

module Pushline
  # Marker for "argument not given" where +nil+ means JSON null (#update).
  UNSET = Object.new.tap { |o| def o.inspect = "Pushline::UNSET" }.freeze

  # Merged answers of Client#bulk_send.
  #
  # +errors+ holds one ChunkError per request that failed as a whole (nothing was sent for it).
  BulkResult = Struct.new(:sent, :failed, :results, :errors, :requests, keyword_init: true) do
    def ok? = errors.empty?
  end
  ChunkError = Struct.new(:index, :targets, :error)

  # A client for the Pushline daemon (protocol.md). Responses are Hashes with
  # String keys, exactly as the daemon sent them (without +id+ and +ok+).
  #
  #   client = Pushline::Client.new(socket_path: "/run/pushline.sock")
  #   client.register(platform: "fcm", registration_id: token, user: current_user.id)
  #   client.send_message(users: [current_user.id], title: "Hi", message: "Your order shipped")
  #
  # Threads: one connection per client, guarded by a Mutex; share one client
  # between threads (requests are serialized), or create one per thread for
  # parallel slow sends.
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

    attr_reader :socket_path, :timeout

    # +socket_path+ defaults to ENV["PUSHLINE_SOCKET"], then ./var/pushline.sock.
    # +timeout+ (seconds, nil for none) bounds each request's round trip.
    def initialize(socket_path: nil, timeout: 10)
      @socket_path = socket_path || ENV["PUSHLINE_SOCKET"] || DEFAULT_SOCKET
      @timeout = timeout
      @mutex = Mutex.new
      @conn = nil
      @server = nil
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

    # Closes the connection; the client stays usable (it reconnects on the next request).
    def close
      @mutex.synchronize { drop }
      nil
    end

    # The ping answer of the current connection ("version", "protocol").
    def server
      @mutex.synchronize do
        connection
        @server.dup
      end
    end

    # Sends any command; returns the response without "id"/"ok", or raises its error.
    #
    #   client.call("devices", user: "42", limit: 10)
    def call(cmd, **arguments)
      request = stringify(arguments).merge("cmd" => cmd.to_s)
      result(@mutex.synchronize { roundtrip(request) })
    end

    # +ping+: {"version" => "0.1.0", "protocol" => "1.0"}.
    def ping = call("ping")

    # +register+: one device from keywords, or many with +devices: [{...}, ...]+ (all or none).
    def register(platform: nil, registration_id: nil, app: nil, name: nil, user: nil, device_id: nil,
                 active: nil, p256dh: nil, auth: nil, browser: nil, devices: nil)
      single = compact(platform: platform, registration_id: registration_id, app: app, name: name,
                       user: user&.to_s, device_id: device_id, active: active, p256dh: p256dh, auth: auth,
                       browser: browser)
      if devices
        raise ArgumentError, "register: pass either devices: [...] or one device's fields, not both" unless single.empty?

        return call("register", devices: devices.map { |d| stringify(d) })
      end
      call("register", **single)
    end

    # +unregister+: {"deleted" => n, "not_found" => [...]}.
    def unregister(device: nil, ids: nil, registration_id: nil, registration_ids: nil, platform: nil, app: nil)
      call("unregister", **compact(device: device, ids: ids, registration_id: registration_id,
                                   registration_ids: registration_ids, platform: platform, app: app))
    end

    # +devices+: one page, {"devices" => [...], "next" => id or nil}.
    def devices(app: nil, platform: nil, user: nil, active: nil, registration_id: nil, ids: nil, limit: nil,
                after: nil)
      call("devices", **compact(app: app, platform: platform, user: user&.to_s, active: active,
                                registration_id: registration_id, ids: ids, limit: limit, after: after))
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
    # sets +name+, +user+, +device_id+ (nil clears) and +active+. Returns {"device" => {...}}.
    def update(device: nil, registration_id: nil, platform: nil, app: nil, name: UNSET, user: UNSET,
               device_id: UNSET, active: UNSET)
      request = compact(device: device, registration_id: registration_id, platform: platform, app: app)
      { name: name, user: user.is_a?(Integer) ? user.to_s : user, device_id: device_id, active: active }.each do |k, v|
        request[k] = v unless v.equal?(UNSET)
      end
      call("update", **request)
    end

    # +prune+: deletes inactive devices (only those inactive before +inactive_before+:
    # Unix seconds, ISO 8601 String, or a Time). {"deleted" => n}.
    def prune(inactive_before: nil)
      value = inactive_before.respond_to?(:utc) ? inactive_before.utc.strftime("%Y-%m-%dT%H:%M:%SZ") : inactive_before
      call("prune", **compact(inactive_before: value))
    end

    # +stats+: counts, uptime, connections, pending, notifications.
    def stats = call("stats")

    # +send+ (named send_message: Object#send is Ruby's own): one notification to one target.
    # Per-device failures are entries with "status" => "failed", not exceptions.
    #
    #   client.send_message(users: ["42"], message: "Your order shipped", badge: 1, extra: { order: 981 })
    def send_message(ids: nil, registration_ids: nil, users: nil, filter: nil, platform: nil, app: nil, **notification)
      call("send", **target(ids, registration_ids, users, filter, platform, app), **compact(**notification))
    end

    # +bulk+: send_message for large target lists, or +messages: [{target + notification}, ...]+.
    def bulk(ids: nil, registration_ids: nil, users: nil, filter: nil, platform: nil, app: nil, messages: nil,
             **notification)
      request = target(ids, registration_ids, users, filter, platform, app)
      request[:messages] = messages if messages
      call("bulk", **request, **compact(**notification))
    end

    # +topic+: sends to an FCM topic or condition.
    def topic(topic: nil, condition: nil, app: nil, **notification)
      call("topic", **compact(topic: topic, condition: condition, app: app), **compact(**notification))
    end

    # +subscribe+: adds the FCM devices of a target to a topic.
    def subscribe(topic:, app: nil, ids: nil, registration_ids: nil, users: nil, filter: nil, platform: nil)
      call("subscribe", topic: topic, **target(ids, registration_ids, users, filter, platform, app))
    end

    # +unsubscribe+: removes the FCM devices of a target from a topic.
    def unsubscribe(topic:, app: nil, ids: nil, registration_ids: nil, users: nil, filter: nil, platform: nil)
      call("unsubscribe", topic: topic, **target(ids, registration_ids, users, filter, platform, app))
    end

    # +topics+: {"devices" => [{"id" => 21, "topics" => [...]}]}.
    def topics(ids: nil, registration_ids: nil, users: nil, filter: nil, platform: nil, app: nil)
      call("topics", **target(ids, registration_ids, users, filter, platform, app))
    end

    # +subscribers+: {"devices" => [...]} recorded in a topic.
    def subscribers(topic:, app: nil)
      call("subscribers", **compact(topic: topic, app: app))
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

      common = stringify(compact(platform: platform, app: app, **notification))
      BulkPipeline.new(self, target, common, chunk, window, collect_results, max_line_bytes, busy_retries)
                  .run(targets)
    end

    # @api private: opens a connection and checks the protocol version (used by BulkPipeline too).
    def open_connection
      conn = Connection.new(@socket_path, @timeout)
      begin
        info = result(conn.request({ "cmd" => "ping" }))
      rescue Timeout
        conn.close
        raise ConnectionTimeout.new("no answer to ping from '#{@socket_path}' within #{@timeout} s")
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
      [conn, info]
    end

    # @api private
    def result(response)
      return response.reject { |k, _| %w[id ok].include?(k) } if response["ok"] == true

      raise Pushline.error_from_response(response["error"])
    end

    private

    def connection(fresh: false)
      drop if @conn && (fresh || @conn.stale?)
      @conn, @server = open_connection unless @conn
      @conn
    end

    def drop
      @conn&.close
      @conn = nil
    end

    def roundtrip(request)
      cmd = request["cmd"]
      2.times do |attempt|
        conn = connection(fresh: attempt.positive?)
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
          raise ConnectionTimeout.new("no response to '#{cmd}' within #{@timeout} s (the daemon may still carry it out)",
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
      compact(ids: ids, registration_ids: registration_ids, users: users&.map(&:to_s), filter: filter,
              platform: platform, app: app)
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
