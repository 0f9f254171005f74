# frozen_string_literal: true

require_relative "test_helper"
require "stringio"
require_relative "../../../examples/rails/rack_app"

# examples/rails/rack_app.rb, called as Rack calls it, against a real daemon.
class RackExampleTest < PushlineTest
  def post(app, path, body)
    status, headers, chunks = app.call("REQUEST_METHOD" => "POST", "PATH_INFO" => path,
                                       "rack.input" => StringIO.new(JSON.generate(body)))
    assert_equal "application/json", headers["content-type"]
    [status, JSON.parse(chunks.join)]
  end

  def test_register_and_notify
    app = PushlineRackApp.new(@client)
    status, body = post(app, "/devices", { user: "42", platform: "apns", registration_id: apns_token(7) })
    assert_equal 201, status
    assert_equal "42", body["device"]["user"]
    status, again = post(app, "/devices", { user: "42", platform: "apns", registration_id: apns_token(7) })
    assert_equal [200, body["device"]["id"]], [status, again["device"]["id"]]
    status, bad = post(app, "/devices", { user: "42", platform: "apns", registration_id: "nothex" })
    assert_equal [422, "registration_id"], [status, bad["field"]]
    status, sent = post(app, "/notify", { user: "42", message: "Your order shipped" })
    assert_equal [409, "apns"], [status, sent["platform"]]
  end

  def test_a_token_registered_by_another_user_is_reassigned
    app = PushlineRackApp.new(@client)
    status, ann = post(app, "/devices", { user: "ann", platform: "apns", registration_id: apns_token(9),
                                          name: "Ann's iPhone" })
    assert_equal 201, status
    status, bob = post(app, "/devices", { user: "bob", platform: "apns", registration_id: apns_token(9),
                                          name: "Bob's phone" })
    assert_equal 200, status
    assert_equal [ann["device"]["id"], "bob", "Bob's phone"], bob["device"].values_at("id", "user", "name")
    assert_empty @client.devices(user: "ann")["devices"]
    # Bob again, without a name: his own device keeps its name.
    _, again = post(app, "/devices", { user: "bob", platform: "apns", registration_id: apns_token(9) })
    assert_equal "Bob's phone", again["device"]["name"]
  end
end
