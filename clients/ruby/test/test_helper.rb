# frozen_string_literal: true

# Starts a real `pushline serve` on a temporary socket for each test.
# The binary: $PUSHLINE_BIN, else <repo>/.build/debug/pushline, else .build/release, else PATH.

$LOAD_PATH.unshift File.expand_path("../lib", __dir__)
require "pushline"
require "minitest/autorun"
require "tmpdir"
require "fileutils"

module DaemonHelper
  REPO = File.expand_path("../../..", __dir__)

  def self.binary
    return ENV["PUSHLINE_BIN"] if ENV["PUSHLINE_BIN"] && !ENV["PUSHLINE_BIN"].empty?

    %w[.build/debug/pushline .build/release/pushline].each do |rel|
      path = File.join(REPO, rel)
      return path if File.executable?(path)
    end
    found = ENV.fetch("PATH", "").split(":").map { |d| File.join(d, "pushline") }.find { |p| File.executable?(p) }
    found or raise "no pushline binary: run `swift build` at the repository root or set PUSHLINE_BIN"
  end

  # A daemon on <dir>/p.sock with database <dir>/p.db.
  class Daemon
    attr_reader :socket, :dir

    def initialize(dir, config: nil)
      @dir = dir
      @socket = File.join(dir, "p.sock")
      @database = File.join(dir, "p.db")
      @log = File.join(dir, "daemon.log")
      @args = ["--socket", @socket, "--database", @database]
      return unless config

      path = File.join(dir, "pushline.json")
      File.write(path, JSON.generate(config))
      @args += ["--config", path]
    end

    def start(timeout: 20)
      @pid = Process.spawn(DaemonHelper.binary, "serve", *@args,
                           chdir: @dir, in: File::NULL, out: [@log, "a"], err: [@log, "a"])
      deadline = Process.clock_gettime(Process::CLOCK_MONOTONIC) + timeout
      while Process.clock_gettime(Process::CLOCK_MONOTONIC) < deadline
        raise "pushline serve exited:\n#{log}" if Process.wait(@pid, Process::WNOHANG)
        return self if ping_ok?

        sleep 0.05
      end
      stop
      raise "pushline serve did not answer ping within #{timeout} s:\n#{log}"
    end

    def ping_ok?
      UNIXSocket.open(@socket) do |s|
        s.write(%({"id":0,"cmd":"ping"}\n))
        return false unless s.wait_readable(1)

        line = s.gets
        line && JSON.parse(line)["ok"] == true
      end
    rescue SystemCallError, IOError, JSON::ParserError
      false
    end

    def stop
      return unless @pid

      begin
        Process.kill("TERM", @pid)
        deadline = Process.clock_gettime(Process::CLOCK_MONOTONIC) + 10
        until Process.wait(@pid, Process::WNOHANG)
          if Process.clock_gettime(Process::CLOCK_MONOTONIC) > deadline
            Process.kill("KILL", @pid)
            Process.wait(@pid)
            break
          end
          sleep 0.02
        end
      rescue Errno::ESRCH, Errno::ECHILD
        nil
      end
      @pid = nil
    end

    def restart
      stop
      start
    end

    def log
      File.exist?(@log) ? File.read(@log)[-4000..] || File.read(@log) : ""
    end
  end
end

# Base class: a fresh daemon and client per test.
class PushlineTest < Minitest::Test
  def setup
    @dir = Dir.mktmpdir("plrb-", "/tmp")
    @daemon = DaemonHelper::Daemon.new(@dir).start
    @client = Pushline::Client.new(socket_path: @daemon.socket, timeout: 10)
  end

  def teardown
    @client&.close
    @daemon&.stop
    FileUtils.rm_rf(@dir) if @dir
  end

  def apns_token(n) = format("%064x", n)
end
