# frozen_string_literal: true

require_relative "test_helper"

# The shared client scenario (register, list, send, bad input), against a real daemon.
class ClientTest < PushlineTest
  def test_ping_reports_protocol_1
    info = @client.ping
    assert_equal "1", info["protocol"].split(".").first
    refute_empty info["version"]
    assert_equal info["protocol"], @client.server["protocol"]
  end

  def test_socket_path_from_environment
    old = ENV["PUSHLINE_SOCKET"]
    ENV["PUSHLINE_SOCKET"] = @daemon.socket
    client = Pushline::Client.new
    assert_equal @daemon.socket, client.socket_path
    assert client.ping["protocol"].start_with?("1.")
    client.close
  ensure
    ENV["PUSHLINE_SOCKET"] = old
  end

  def test_register_then_list
    r = @client.register(platform: "apns", registration_id: apns_token(1).upcase, user: 42, name: "Ann's iPhone")
    assert_equal true, r["created"]
    dev = r["device"]
    assert_equal ["apns", "default", apns_token(1), "42", true],
                 dev.values_at("platform", "app", "registration_id", "user", "active")
    @client.register(platform: "fcm", registration_id: "fcm-token-for-someone-else", user: "7")
    page = @client.devices(user: "42")
    assert_equal [dev["id"]], page["devices"].map { |d| d["id"] }
    assert_nil page["next"]
  end

  def test_register_batch_and_page_through
    r = @client.register(devices: (0...5).map { |i| { platform: "fcm", registration_id: "tok-#{i}", user: "9" } })
    assert_equal 5, r["created"]
    first = @client.devices(user: "9", limit: 2)
    assert_equal 2, first["devices"].size
    assert_equal first["devices"].last["id"], first["next"]
    assert_equal r["devices"].map { |d| d["id"] }.sort, @client.each_device(user: "9", page_size: 2).map { |d| d["id"] }
  end

  def test_send_to_unconfigured_provider
    @client.register(platform: "apns", registration_id: apns_token(2), user: "42")
    e = assert_raises(Pushline::ProviderNotConfigured) do
      @client.send_message(users: [42], message: "Your order shipped", badge: 1, extra: { order: 981 })
    end
    assert_equal "provider_not_configured", e.code
    assert_equal %w[apns default], [e.platform, e.app]
    assert_kind_of Pushline::Error, e
  end

  def test_invalid_argument_names_field
    e = assert_raises(Pushline::InvalidArgument) { @client.register(platform: "apns", registration_id: "not-hex") }
    assert_equal "registration_id", e.field
    e = assert_raises(Pushline::InvalidArgument) do
      @client.register(devices: [{ platform: "fcm", registration_id: "good" },
                                 { platform: "fcm", registration_id: "bad token" }])
    end
    assert_equal "devices[1].registration_id", e.field
    assert_empty @client.devices(registration_id: "good")["devices"], "a rejected batch registers nothing"
  end

  def test_unknown_argument_is_invalid
    e = assert_raises(Pushline::InvalidArgument) { @client.call("update", device: 1, nmae: "Work phone") }
    assert_equal "nmae", e.field
  end

  def test_duplicate_registration
    @client.register(platform: "fcm", registration_id: "dup-token")
    e = assert_raises(Pushline::DuplicateRegistration) { @client.register(platform: "fcm", registration_id: "dup-token") }
    assert_equal %w[duplicate_registration registration_id], [e.code, e.field]
    assert_equal 1, @client.devices(registration_id: "dup-token")["devices"].size
  end

  def test_not_found
    assert_raises(Pushline::NotFound) { @client.update(device: 987_654, name: "nobody") }
  end

  def test_unknown_command
    assert_raises(Pushline::UnknownCommand) { @client.call("pong") }
  end

  def test_update_sets_and_clears
    dev = @client.register(platform: "fcm", registration_id: "upd-token", name: "old", user: "5")["device"]
    d = @client.update(device: dev["id"], name: "new")["device"]
    assert_equal %w[new 5], d.values_at("name", "user")
    d = @client.update(device: dev["id"], name: nil, active: false)["device"]
    assert_nil d["name"]
    assert_equal false, d["active"]
  end

  def test_unregister_lists_missing
    dev = @client.register(platform: "fcm", registration_id: "gone-token")["device"]
    r = @client.unregister(ids: [dev["id"], 99_999])
    assert_equal 1, r["deleted"]
    assert_equal [99_999], r["not_found"]
  end

  def test_line_too_long_keeps_connection
    assert_raises(Pushline::LineTooLong) { @client.register(platform: "fcm", registration_id: "x" * (1 << 21)) }
    assert @client.ping["protocol"].start_with?("1.")
  end

  def test_threads_share_one_client
    threads = (0...8).map do |n|
      Thread.new do
        10.times { |i| @client.register(platform: "fcm", registration_id: "t#{n}-#{i}", user: n.to_s) }
        @client.each_device(user: n.to_s, page_size: 3).count
      end
    end
    assert_equal [10] * 8, threads.map(&:value)
  end

  def test_reconnects_after_daemon_restart
    dev = @client.register(platform: "fcm", registration_id: "survivor")["device"]
    @daemon.restart
    assert_equal "survivor", @client.devices(ids: [dev["id"]])["devices"].first["registration_id"]
    assert_equal true, @client.register(platform: "fcm", registration_id: "after-restart")["created"]
  end

  def test_connection_error_when_daemon_is_down
    @client.ping
    @daemon.stop
    assert_raises(Pushline::ConnectionError) { @client.ping }
    e = assert_raises(Pushline::ConnectionError) { Pushline::Client.new(socket_path: @daemon.socket).stats }
    assert_includes e.message, @daemon.socket
  end

  def test_bulk_send_pipelines_and_merges
    ids = @client.register(devices: (0...30).map { |i| { platform: "fcm", registration_id: "b-#{i}" } })["devices"]
                 .map { |d| d["id"] }
    r = @client.bulk_send(ids.each, chunk: 7, message: "Sale!")
    assert_equal 5, r.requests
    assert_equal 0, r.sent
    refute r.ok?
    assert_equal [0, 1, 2, 3, 4], r.errors.map(&:index)
    assert(r.errors.all? { |e| e.error.is_a?(Pushline::ProviderNotConfigured) })
    assert_equal ids, r.errors.flat_map(&:targets).sort
    r = @client.bulk_send(ids, chunk: 30, max_line_bytes: 120, message: "Sale!")
    assert_operator r.requests, :>, 1
    assert_equal ids, r.errors.flat_map(&:targets).sort
  end

  def test_timeout_when_daemon_does_not_answer
    path = File.join(@dir, "silent.sock")
    server = UNIXServer.new(path)
    client = Pushline::Client.new(socket_path: path, timeout: 0.3)
    t0 = Process.clock_gettime(Process::CLOCK_MONOTONIC)
    assert_raises(Pushline::ConnectionTimeout) { client.ping }
    assert_operator Process.clock_gettime(Process::CLOCK_MONOTONIC) - t0, :<, 3
  ensure
    server&.close
  end

  def test_protocol_major_mismatch
    # A one-shot responder claiming protocol 2.0 (the real daemon speaks 1.x).
    path = File.join(@dir, "v2.sock")
    server = UNIXServer.new(path)
    responder = Thread.new do
      conn = server.accept
      id = JSON.parse(conn.gets)["id"]
      conn.write(JSON.generate({ id: id, ok: true, version: "9.0.0", protocol: "2.0" }) + "\n")
      sleep 0.2
      conn.close
    end
    e = assert_raises(Pushline::ProtocolVersionError) { Pushline::Client.new(socket_path: path, timeout: 2).devices }
    assert_includes e.message, "2.0"
  ensure
    responder&.join
    server&.close
  end

  def test_unknown_error_code_maps_to_internal_error
    e = Pushline.error_from_response({ "code" => "brand_new_code", "message" => "m", "x" => 1 })
    assert_instance_of Pushline::InternalError, e
    assert_equal ["brand_new_code", { "x" => 1 }], [e.code, e.details]
    b = Pushline.error_from_response({ "code" => "busy", "message" => "later", "retry_after_ms" => 50 })
    assert_equal 50, b.retry_after_ms
  end
end
