# frozen_string_literal: true

require_relative "test_helper"

# Issue 16: lone values where lists are expected are refused before sending, per-call
# timeouts, defaults longer than the daemon's deadline, a connection per thread, typed
# results, retryable?, Pushline.configure and the Railtie.
class Issue16Test < PushlineTest
  def test_a_lone_value_where_a_list_is_expected_is_refused_before_sending
    %w[4 2 42].each { |u| @client.register(platform: "apns", registration_id: apns_token(100 + u.to_i), user: u) }
    [[{ users: "42" }, "users"], [{ users: 42 }, "users"], [{ registration_ids: "abc", platform: "fcm" }, "registration_ids"],
     [{ ids: 1 }, "ids"], [{ ids: [1, "2"] }, "ids[1]"], [{ filter: {} }, "filter"], [{ filter: "x" }, "filter"]].each do |args, field|
      e = assert_raises(Pushline::InvalidArgument, args.inspect) { @client.send_message(message: "for 42 only", dry_run: true, **args) }
      assert_equal field, e.field, args.inspect
      assert_kind_of Pushline::ArgumentTypeError, e
    end
    e = assert_raises(Pushline::ArgumentTypeError) { @client.bulk(messages: [{ users: "42", message: "x" }]) }
    assert_equal "messages[0].users", e.field
    assert_raises(Pushline::ArgumentTypeError) { @client.bulk_send("12345", message: "x") }
    assert_raises(Pushline::ArgumentTypeError) { @client.unregister(ids: 3) }
    assert_equal({ "sent" => 0, "failed" => 0 }, @client.stats["notifications"])
    # Integers in users still become strings.
    assert_equal ["42"], @client.devices(user: 42).devices.map(&:user)
  end

  def test_default_timeout_outlasts_the_daemon_deadline_and_per_call_timeout_is_local
    assert_operator Pushline::Client.new.timeout, :>, 30
    @client.register(platform: "apns", registration_id: apns_token(1), user: "1")
    # Before, timeout: went to the daemon as a notification field and was refused.
    e = assert_raises(Pushline::ProviderNotConfigured) { @client.send_message(users: ["1"], message: "x", timeout: 20) }
    assert_equal "apns", e.platform
    assert_equal 1, @client.devices(user: "1", timeout: 5).devices.size
    assert_raises(Pushline::ArgumentTypeError) { @client.stats(timeout: -1) }
  end

  # A daemon stand-in: answers ping at once; holds "send" until a "register" was answered
  # on another connection (at most 10 s). One shared connection cannot get past that.
  def start_hold_server(path)
    server = UNIXServer.new(path)
    registered = Queue.new
    threads = []
    acceptor = Thread.new do
      loop do
        conn = server.accept
        threads << Thread.new(conn) do |c|
          while (line = c.gets)
            req = JSON.parse(line)
            case req["cmd"]
            when "ping" then c.write(JSON.generate(id: req["id"], ok: true, version: "x", protocol: "1.1") + "\n")
            when "send"
              got = begin
                Timeout.timeout(10) { registered.pop }
              rescue Timeout::Error
                nil
              end
              c.write(JSON.generate(id: req["id"], ok: true, sent: got ? 1 : 0, failed: 0, results: []) + "\n")
            else
              c.write(JSON.generate(id: req["id"], ok: true, created: true, updated: false, device: { id: 1 }) + "\n")
              registered << true
            end
          end
        rescue IOError, SystemCallError
          nil
        end
      end
    rescue IOError, SystemCallError
      nil
    end
    [server, acceptor, threads]
  end

  def test_a_slow_send_does_not_block_other_threads
    require "timeout"
    path = File.join(@dir, "hold.sock")
    server, acceptor, threads = start_hold_server(path)
    client = Pushline::Client.new(socket_path: path, timeout: 20)
    slow = Thread.new { client.send_message(users: ["1"], message: "slow") }
    sleep 0.2 # let the send be written first
    fast = Thread.new { client.register(platform: "fcm", registration_id: "t") }
    assert_equal 1, fast.value.device.id
    # The server held the send until the other thread's register was answered; with one shared
    # connection the register could not be written before the send's answer (sent 0 after 10 s).
    assert_equal 1, slow.value.sent
  ensure
    client&.close
    server&.close
    acceptor&.kill
    threads&.each(&:kill)
  end

  def test_each_thread_has_its_own_connection
    @client.ping
    ready = Queue.new
    release = Queue.new
    threads = 2.times.map { Thread.new { @client.ping; ready << true; release.pop } }
    2.times { ready.pop }
    assert_operator @client.stats["connections"], :>=, 3
  ensure
    2.times { release << true }
    threads&.each(&:join)
  end

  def test_typed_results_behave_as_hashes
    reg = @client.register(platform: "apns", registration_id: apns_token(7), user: "7", name: "Ann")
    assert_kind_of Pushline::RegisterResult, reg
    assert_equal [true, "Ann", reg["device"]["id"]], [reg.created, reg.device.name, reg.device.id]
    assert_equal Hash, reg.to_h.class
    page = @client.devices(user: "7")
    assert_equal [apns_token(7)], page.devices.map(&:registration_id)
    assert_nil page.next
    assert_nil @client.update(device: reg.device.id, name: nil).device.name
  end

  def test_every_error_says_whether_to_retry
    e = assert_raises(Pushline::InvalidArgument) { @client.register(platform: "apns", registration_id: "nothex") }
    refute e.retryable?
    assert Pushline.error_from_response({ "code" => "busy", "message" => "" }).retryable?
    assert Pushline.error_from_response({ "code" => "shutting_down", "message" => "" }).retryable?
    refute Pushline.error_from_response({ "code" => "not_found", "message" => "" }).retryable?
    e = assert_raises(Pushline::ConnectionError) { Pushline::Client.new(socket_path: File.join(@dir, "none")).ping }
    assert e.retryable?
    refute Pushline::ConnectionTimeout.new("x", request_sent: true).retryable?
  end

  def test_configure_builds_the_process_wide_client
    Pushline.configure do |c|
      c.socket_path = @daemon.socket
      c.timeout = 40
    end
    assert_equal [@daemon.socket, 40], [Pushline.client.socket_path, Pushline.client.timeout]
    assert_equal "1", Pushline.client.ping["protocol"].split(".").first
  ensure
    Pushline.reset!
  end

  def test_railtie_configures_from_rails_config
    stub_rails
    load File.expand_path("../lib/pushline/railtie.rb", __dir__)
    app = Struct.new(:config).new(Struct.new(:pushline).new(Pushline::Railtie.config.pushline))
    app.config.pushline.socket_path = @daemon.socket
    app.config.pushline.timeout = 45
    Pushline::Railtie.initializers.each { |_, blk| blk.call(app) }
    assert_equal [@daemon.socket, 45], [Pushline.client.socket_path, Pushline.client.timeout]
    assert Pushline.client.ping["protocol"]
  ensure
    Pushline.reset!
  end

  # Just enough of Rails::Railtie and ActiveSupport::OrderedOptions for railtie.rb.
  def stub_rails
    return if defined?(::Rails::Railtie)

    Object.const_set(:ActiveSupport, Module.new) unless defined?(::ActiveSupport)
    ::ActiveSupport.const_set(:OrderedOptions, Class.new(Hash) do
      def method_missing(name, *args)
        n = name.to_s
        n.end_with?("=") ? self[n.chomp("=").to_sym] = args.first : self[name]
      end

      def respond_to_missing?(*) = true
    end)
    Object.const_set(:Rails, Module.new) unless defined?(::Rails)
    ::Rails.const_set(:Railtie, Class.new do
      def self.config = (@config ||= ::ActiveSupport::OrderedOptions.new)
      def self.initializers = (@initializers ||= [])
      def self.initializer(name, &blk) = initializers << [name, blk]
    end)
  end
end
