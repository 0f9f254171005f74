# frozen_string_literal: true

$LOAD_PATH.unshift File.expand_path("../lib", __dir__)
require "pushline"
require "minitest/autorun"
require "tmpdir"
require "fileutils"

# What the client re-sends when a connection breaks after a request was written. The real
# daemon never drops a connection between reading a request and answering it, so a scripted
# peer answers the version check, reads one request and hangs up on the first connection.
class ReconnectPolicyTest < Minitest::Test
  def setup
    @dir = Dir.mktmpdir("plrbp-", "/tmp")
    @path = File.join(@dir, "hangup.sock")
    @server = UNIXServer.new(@path)
    @seen = Queue.new
    @acceptor = Thread.new do
      n = 0
      loop do
        conn = @server.accept
        n += 1
        Thread.new(conn, n) { |c, k| handle(c, k) }
      end
    rescue IOError, SystemCallError
      nil
    end
  end

  def handle(conn, n)
    while (line = conn.gets)
      req = JSON.parse(line)
      @seen << [n, req["cmd"]]
      if req["cmd"] == "ping"
        conn.write(JSON.generate({ id: req["id"], ok: true, version: "x", protocol: "1.0" }) + "\n")
      elsif n == 1
        break # hang up: the response is lost
      else
        conn.write(JSON.generate({ id: req["id"], ok: true, devices: [], next: nil }) + "\n")
      end
    end
  ensure
    conn.close
  end

  def teardown
    @server.close
    @acceptor.join(1)
    FileUtils.rm_rf(@dir)
  end

  def seen
    out = []
    out << @seen.pop until @seen.empty?
    out
  end

  def test_read_only_command_is_resent_once
    client = Pushline::Client.new(socket_path: @path, timeout: 5)
    assert_equal({ "devices" => [], "next" => nil }, client.devices)
    assert_equal [[1, "ping"], [1, "devices"], [2, "ping"], [2, "devices"]], seen
  end

  def test_send_is_not_resent
    client = Pushline::Client.new(socket_path: @path, timeout: 5)
    e = assert_raises(Pushline::ConnectionError) { client.send_message(users: ["42"], message: "only once") }
    assert e.request_sent
    assert_equal 1, seen.count { |_, cmd| cmd == "send" }
    assert_equal [], client.devices["devices"]
  end
end
