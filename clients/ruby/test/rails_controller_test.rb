# frozen_string_literal: true

require_relative "test_helper"

# examples/rails/app/controllers/devices_controller.rb in Rails itself (Debian's ruby-rails:
# ActionController with its JSON parameter parsing), against a real daemon. Skipped where
# ActionPack is not installed; `make test` and .ci/run install ruby-rails.
begin
  require "action_controller"
  RAILS_AVAILABLE = true
rescue LoadError
  RAILS_AVAILABLE = false
end

if RAILS_AVAILABLE
  # What the example's app provides around the controller: authentication (Devise or your
  # own). Here the signed-in user is the X-Test-User header.
  class ApplicationController < ActionController::API
    TestUser = Struct.new(:id)

    def authenticate_user!
      head :unauthorized unless request.headers["X-Test-User"]
    end

    def current_user = TestUser.new(request.headers["X-Test-User"])
  end
  require_relative "../../../examples/rails/app/controllers/devices_controller"
end

class RailsControllerTest < PushlineTest
  def setup
    skip "ActionPack (Debian ruby-rails) is not installed" unless RAILS_AVAILABLE
    super
    Pushline.configure do |c|
      c.socket_path = @daemon.socket
      c.app = "default"
    end
  end

  def teardown
    Pushline.reset! if RAILS_AVAILABLE
    super
  end

  # POST /devices as the given user, through Rails' own request and parameter handling.
  def create(user, body)
    env = Rack::MockRequest.env_for("/devices", method: "POST", input: JSON.generate(body),
                                                "CONTENT_TYPE" => "application/json", "HTTP_X_TEST_USER" => user)
    status, _headers, rack_body = DevicesController.action(:create).call(env)
    text = +""
    rack_body.each { |chunk| text << chunk }
    [status, text.empty? ? {} : JSON.parse(text)]
  end

  def test_a_token_registered_by_another_user_is_reassigned
    status, ann = create("ann", { platform: "apns", registration_id: apns_token(11), name: "Ann's iPhone" })
    assert_equal 201, status, ann
    status, bob = create("bob", { platform: "apns", registration_id: apns_token(11), name: "Bob's phone" })
    assert_equal 200, status, bob
    # Bob gets the device (same id), with his name; nothing of Ann's is returned or kept.
    assert_equal [ann["device"]["id"], "bob", "Bob's phone"], bob["device"].values_at("id", "user", "name")
    assert_empty @client.devices(user: "ann")["devices"]
    # Bob again without a name: his own device keeps its name.
    status, again = create("bob", { platform: "apns", registration_id: apns_token(11) })
    assert_equal [200, "Bob's phone"], [status, again["device"]["name"]]
  end

  def test_a_bad_token_is_unprocessable_and_names_the_field
    status, body = create("ann", { platform: "apns", registration_id: "nothex" })
    assert_equal [422, "registration_id"], [status, body["field"]]
  end

  def test_no_signed_in_user_is_refused_before_pushline_is_called
    env = Rack::MockRequest.env_for("/devices", method: "POST", input: "{}", "CONTENT_TYPE" => "application/json")
    status, = DevicesController.action(:create).call(env)
    assert_equal 401, status
    assert_empty @client.devices["devices"]
  end
end
