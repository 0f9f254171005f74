# frozen_string_literal: true

require_relative "test_helper"
require "net/http"

# A real send through the repository's fake APNs (Tests/fakes/fake_apns.py: HTTP/2 + TLS on
# loopback), when that fake is in the tree.
class APNsTest < Minitest::Test
  FAKE = ENV["PUSHLINE_FAKE_APNS"] || File.join(DaemonHelper::REPO, "Tests", "fakes", "fake_apns.py")
  TEAM = "TEAM123456"
  KEY_ID = "KEY1234567"

  def setup
    skip "Tests/fakes/fake_apns.py (the APNs work) is not in this tree" unless File.exist?(FAKE)
    skip "python3 with h2 and cryptography is needed for the fake APNs" unless system("python3", "-c", "import h2, cryptography",
                                                                                         err: File::NULL)
    @dir = Dir.mktmpdir("plrba-", "/tmp")
    work = File.join(@dir, "apns")
    Dir.mkdir(work)
    reader, writer = IO.pipe
    @fake = Process.spawn("python3", FAKE, "--workdir", work, "--gen-key", "#{TEAM}:#{KEY_ID}", out: writer,
                                                                                              err: File::NULL)
    writer.close
    raise "fake APNs did not start" unless reader.wait_readable(30)

    ready = reader.gets.to_s.split
    raise "fake APNs did not start: #{ready.inspect}" unless ready.first == "READY"

    port, ca, @admin = ready[1], ready[2], ready[3].to_i
    config = { apps: { default: { apns: { key_path: File.join(work, "AuthKey_#{KEY_ID}.p8"), key_id: KEY_ID,
                                          team_id: TEAM, topic: "com.example.shop", environment: "sandbox",
                                          endpoint: "https://127.0.0.1:#{port}", ca_file: ca } } } }
    @daemon = DaemonHelper::Daemon.new(@dir, config: config).start
    @client = Pushline::Client.new(socket_path: @daemon.socket, timeout: 30)
  end

  def teardown
    @client&.close
    @daemon&.stop
    if @fake
      Process.kill("TERM", @fake)
      Process.wait(@fake)
    end
    FileUtils.rm_rf(@dir) if @dir
  end

  def received
    JSON.parse(Net::HTTP.get(URI("http://127.0.0.1:#{@admin}/received")))
  end

  def control(body)
    Net::HTTP.post(URI("http://127.0.0.1:#{@admin}/control"), JSON.generate(body), "Content-Type" => "application/json")
  end

  # The APNs provider can land before the HTTP/2 transport; that is a missing daemon feature.
  def skip_without_transport(result)
    reasons = result["results"].map { |r| r["reason"].to_s }
    skip "the daemon cannot send yet: #{reasons.first}" if !reasons.empty? && reasons.all? { |r| r.include?("not implemented") }
  end

  def test_send_through_fake_apns
    token = format("%064x", 0xA1)
    dev = @client.register(platform: "apns", registration_id: token, user: "42")["device"]
    r = @client.send_message(users: ["42"], title: "Shipping", message: "Your order shipped", badge: 1, extra: { order: 981 })
    skip_without_transport(r)
    assert_equal [1, 0], [r["sent"], r["failed"]], r.inspect
    res = r["results"].first
    assert_equal ["sent", dev["id"]], res.values_at("status", "id")
    refute_nil res["apns_id"]
    got = received.select { |x| x["token"] == token }
    assert_equal 1, got.size
    assert_equal [1, 981], [got.first["payload"]["aps"]["badge"], got.first["payload"]["order"]]
    assert_includes JSON.generate(got.first["payload"]), "Your order shipped"
  end

  def test_dead_token_is_data_not_exception
    good = @client.register(platform: "apns", registration_id: format("%064x", 0xB1), user: "7")["device"]
    dead = @client.register(platform: "apns", registration_id: format("%064x", 0xB2), user: "7")["device"]
    later = (Time.now.to_f * 1000).to_i + 60_000
    control({ unregister: [{ token: dead["registration_id"], timestamp: later, reason: "Unregistered" }] })
    r = @client.send_message(users: ["7"], message: "hi")
    skip_without_transport(r)
    by_id = r["results"].to_h { |x| [x["id"], x] }
    assert_equal "sent", by_id[good["id"]]["status"]
    assert_equal %w[failed Unregistered], by_id[dead["id"]].values_at("status", "reason")
    assert_equal true, by_id[dead["id"]]["deactivated"]
    assert_equal false, @client.devices(ids: [dead["id"]])["devices"].first["active"]
  end
end
