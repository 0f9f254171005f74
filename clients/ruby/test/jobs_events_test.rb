# frozen_string_literal: true

require_relative "test_helper"
require_relative "apns_test"
require "timeout"

# Protocol 1.2 in the Ruby client against a real daemon and the fake APNs: the events stream
# (cursor, long-poll, resume across a daemon restart), async sends, job/jobs/cancel and the new
# error classes. The async-job tests need a daemon with the outbox (issue 13's async jobs): they
# talk to the real daemon and fail, not skip, against one without it.
class JobsEventsTest < APNsTest
  # Only this file's tests (not APNsTest's again).
  def self.runnable_methods = public_instance_methods(false).map(&:to_s).grep(/\Atest_/)

  def kill(tokens)
    control({ fail: tokens.map { |t| { token: t, status: 400, reason: "BadDeviceToken", count: -1 } } })
  end

  def apns_token(n) = format("%064x", n)

  def register_all(tokens) = tokens.map { |t| @client.register(platform: "apns", registration_id: t)["device"]["id"] }

  def test_new_error_classes
    e = Pushline.error_from_response({ "code" => "unavailable", "message" => "disk full", "retry_after_ms" => 500 })
    assert_instance_of Pushline::Unavailable, e
    assert e.retryable?
    assert_equal 500, e.retry_after_ms
    assert_instance_of Pushline::Forbidden, Pushline.error_from_response({ "code" => "forbidden", "message" => "no" })
  end

  def test_async_arguments_checked_before_sending
    assert_raises(Pushline::ArgumentTypeError) { @client.send_message(ids: [1], message: "x", async: false, idempotency_key: "k") }
    assert_raises(Pushline::ArgumentTypeError) { @client.send_message(ids: [1], message: "x", send_at: "tomorrow") }
    assert_raises(Pushline::ArgumentTypeError) { @client.events_page(after: "3") }
  end

  def test_events_stream_cursor_and_resume_across_a_restart
    tokens = (0..3).map { |i| apns_token(0xE0 + i) }
    ids = register_all(tokens)
    kill(tokens)
    assert_equal 2, @client.send_message(ids: ids[0, 2], message: "x").failed
    stream = @client.events(wait_ms: 0, stop_when_idle: true)
    got = stream.to_a
    assert_equal ids[0, 2], got.map(&:device)
    assert(got.all? { |e| e.is_a?(Pushline::Event) && e.type == "device_deactivated" })
    assert_equal [tokens[0], "BadDeviceToken"], [got[0].registration_id, got[0].reason]
    assert_equal got.last.seq, stream.cursor
    saved = stream.cursor
    @daemon.restart
    assert_equal 1, @client.send_message(ids: [ids[2]], message: "y").failed
    resumed = @client.events(after: saved, wait_ms: 0, stop_when_idle: true).to_a
    assert_equal [ids[2]], resumed.map(&:device)
    assert_operator resumed[0].seq, :>, saved
    page = @client.events_page(after: 0, limit: 1)
    assert_equal 1, page.events.size
    assert_equal page.events[0].seq, page.next
  end

  def test_events_long_poll_wakes_and_survives_a_restart
    tokens = [apns_token(0xF0), apns_token(0xF1)]
    ids = register_all(tokens)
    kill(tokens)
    reader = Pushline::Client.new(socket_path: @daemon.socket, timeout: 30)
    got = Queue.new
    follower = Thread.new do
      n = 0
      reader.events(wait_ms: 20_000, reconnect_delay: 0.2).each do |e|
        got << [e.device, Process.clock_gettime(Process::CLOCK_MONOTONIC)]
        n += 1
        break if n == 2
      end
    end
    sleep 0.5
    assert got.empty?
    sent_at = Process.clock_gettime(Process::CLOCK_MONOTONIC)
    assert_equal 1, @client.send_message(ids: [ids[0]], message: "x").failed
    first = Timeout.timeout(15) { got.pop }
    assert_equal ids[0], first[0]
    assert_operator first[1] - sent_at, :<, 10 # woken by the event, not the 20 s poll
    @daemon.restart
    assert_equal 1, @client.send_message(ids: [ids[1]], message: "y").failed
    second = Timeout.timeout(30) { got.pop }
    assert_equal ids[1], second[0]
    follower.join(10)
  ensure
    reader&.close
  end

  def test_events_bad_arguments
    e = assert_raises(Pushline::InvalidArgument) { @client.events_page(limit: 5000) }
    assert_equal "limit", e.field
    e = assert_raises(Pushline::InvalidArgument) { @client.events_page(wait_ms: 120_000) }
    assert_equal "wait_ms", e.field
  end

  def wait_done(id, timeout = 30)
    deadline = Time.now + timeout
    while Time.now < deadline
      j = @client.job(id)
      return j if j.done?

      sleep 0.1
    end
    flunk "job #{id} not done: #{@client.job(id).inspect}"
  end

  # Needs the outbox.
  def test_async_send_job_and_job_done_event
    tokens = (0..2).map { |i| apns_token(0x100 + i) }
    ids = register_all(tokens)
    r = @client.send_message(ids: ids, message: "later", async: true)
    assert_instance_of Pushline::JobAccepted, r
    refute_nil r.job_id
    j = wait_done(r.job_id)
    assert_equal ["done", 3, 3, 0], [j.state, j.devices, j.sent, j.failed]
    page = @client.job(r.job_id, results: true, limit: 2)
    assert_equal 2, page.results.size
    assert_equal tokens.sort, received.map { |x| x["token"] }.sort
    assert_includes @client.jobs.jobs.map(&:id), r.job_id
    done = @client.events(wait_ms: 0, stop_when_idle: true).select { |e| e.type == "job_done" }
    assert_equal [r.job_id], done.map(&:job)
  end

  # Needs the outbox.
  def test_idempotency_key_send_at_and_cancel
    dev = register_all([apns_token(0x200)]).first
    a = @client.bulk(ids: [dev], message: "once", idempotency_key: "order-981-shipped")
    b = @client.bulk(ids: [dev], message: "once", idempotency_key: "order-981-shipped")
    assert_equal a.job_id, b.job_id
    assert_equal [false, true], [a.duplicate?, b.duplicate?]
    wait_done(a.job_id)
    assert_equal 1, received.count { |x| x["token"] == apns_token(0x200) }
    later = @client.send_message(ids: [dev], message: "in an hour", send_at: Time.now + 3600)
    assert_equal "scheduled", later.state
    assert_instance_of Pushline::Job, @client.cancel(later.job_id)
    assert_equal "canceled", @client.job(later.job_id).state
    assert_raises(Pushline::NotFound) { @client.job("no-such-job") }
  end

  # Needs the outbox: `topic` with async (APNs subscribers in the registry; no FCM here).
  def test_async_topic_job_reaches_the_subscribers
    tokens = (0..2).map { |i| apns_token(0x300 + i) }
    ids = register_all(tokens)
    assert_equal 2, @client.subscribe(topic: "news", ids: ids[0, 2]).succeeded
    r = @client.topic(topic: "news", message: "extra", async: true, idempotency_key: "ed-1")
    assert_instance_of Pushline::JobAccepted, r
    again = @client.topic(topic: "news", message: "extra", idempotency_key: "ed-1")
    assert_equal [r.job_id, true], [again.job_id, again.duplicate?]
    j = wait_done(r.job_id)
    assert_equal [2, 2, 0], [j.devices, j.sent, j.failed]
    assert_equal tokens[0, 2].sort, received.map { |x| x["token"] }.sort
    later = @client.topic(topic: "news", message: "later", send_at: Time.now + 3600)
    assert_equal "scheduled", later.state
  end
end
