# frozen_string_literal: true

require "json"

module Pushline
  # Client#bulk_send's machinery: one dedicated connection, a writer thread that
  # keeps up to +window+ +bulk+ requests in flight, the caller's thread reading
  # the answers in order and merging them.
  class BulkPipeline
    def initialize(client, target, common, chunk, window, collect_results, max_line_bytes, busy_retries)
      raise ArgumentError, "chunk and window must be at least 1" if chunk < 1 || window < 1

      @client = client
      @target = target
      @common = common
      @chunk = chunk
      @window = window
      @collect = collect_results
      @max_line_bytes = max_line_bytes
      @busy_retries = busy_retries
      @write_lock = Mutex.new
      @inflight = Queue.new
      @slots = SizedQueue.new(window)
    end

    def run(targets)
      conn, = @client.open_connection
      @conn = conn
      result = BulkResult.new(sent: 0, failed: 0, results: [], errors: [], requests: 0)
      writer = Thread.new { write_all(targets, result) }
      read_all(result)
      writer.join
      result
    ensure
      writer&.kill if writer&.alive?
      conn&.close
    end

    private

    def encode(items)
      body = JSON.generate({ "cmd" => "bulk", @target => (@target == "users" ? items.map(&:to_s) : items) }.merge(@common))
      return [[items, body]] if body.bytesize + 32 <= @max_line_bytes || items.size < 2

      half = items.size / 2
      encode(items[0, half]) + encode(items[half..])
    end

    # Writes "id" in front of the body's members, queues the request as in flight.
    def send_request(idx, items, body, attempts, result)
      @write_lock.synchronize do
        id = @conn.take_id
        @inflight << [id, idx, items, body, attempts]
        result.requests += 1
        @conn.write("{\"id\":#{id},#{body[1..]}\n")
      end
    end

    def write_all(targets, result)
      index = 0
      batch = []
      flush = lambda do
        encode(batch).each do |items, body|
          @slots.push(true)
          send_request(index, items, body, 0, result)
          index += 1
        end
        batch = []
      end
      targets.each do |t|
        batch << t
        flush.call if batch.size >= @chunk
      end
      flush.call unless batch.empty?
    rescue StandardError => e
      @writer_error = e
    ensure
      @inflight << :done
    end

    def read_all(result)
      loop do
        entry = @inflight.pop
        if entry == :done
          break if @inflight.empty?

          @inflight << :done # a retry was queued after the writer finished: answer it first
          next
        end
        id, idx, items, body, attempts = entry
        response = begin
          @conn.read_response(id)
        rescue Client::Timeout
          raise ConnectionTimeout.new("bulk_send: no response within #{@client.timeout} s", request_sent: true)
        rescue Client::Closed, SystemCallError, IOError => e
          raise ConnectionError.new("bulk_send: connection lost (#{@writer_error&.message || e.message})",
                                    request_sent: true)
        end
        @slots.pop if attempts.zero?
        begin
          r = @client.result(response)
          result.sent += r.fetch("sent", 0).to_i
          result.failed += r.fetch("failed", 0).to_i
          result.results.concat(r.fetch("results", [])) if @collect
        rescue Busy => e
          if attempts < @busy_retries
            sleep((e.retry_after_ms || 100) / 1000.0)
            send_request(idx, items, body, attempts + 1, result)
          else
            result.errors << ChunkError.new(idx, items, e)
          end
        rescue Error => e
          result.errors << ChunkError.new(idx, items, e)
        end
      end
      raise @writer_error if @writer_error && !@writer_error.is_a?(Error) && !@writer_error.is_a?(SystemCallError)
      raise @writer_error if @writer_error.is_a?(Error)
    end
  end
end
