# frozen_string_literal: true

# POST /devices   {"platform": "fcm", "registration_id": "...", "name": "Ann's Pixel"}
# DELETE /devices/:id
#
# Registers (or removes) a device of the signed-in user in Pushline.
class DevicesController < ApplicationController
  before_action :authenticate_user! # Devise, or your own authentication

  DEVICE_FIELDS = %i[platform registration_id name device_id p256dh auth browser].freeze

  def create
    fields = params.permit(*DEVICE_FIELDS).to_h.symbolize_keys
    reg = Pushline.client.register(app: pushline_app, user: current_user.id, **fields)
    render json: { device: reg["device"], created: true }, status: :created
  rescue Pushline::DuplicateRegistration
    # The token belongs to whoever registered it last (the phone changed hands or accounts):
    # re-assign it to the current user; never render another user's device.
    render json: { device: reassign(current_user.id.to_s, fields), created: false }
  rescue Pushline::InvalidArgument => e
    render json: { error: e.error_message, field: e.field }, status: :unprocessable_entity
  rescue Pushline::ConnectionError
    render json: { error: "notifications are unavailable, try again later" }, status: :service_unavailable
  end

  def destroy
    # Only the user's own device.
    mine = Pushline.client.devices(user: current_user.id, ids: [params[:id].to_i])["devices"]
    return head :not_found if mine.empty?

    Pushline.client.unregister(device: mine.first["id"])
    head :no_content
  end

  private

  def pushline_app = Pushline.configuration.app

  # The user's own device keeps what they did not resend; another user's device gets this
  # user's name and device id (or none), so nothing of the previous owner stays attached.
  def reassign(user, fields)
    key = { app: pushline_app, platform: fields[:platform], registration_id: fields[:registration_id] }
    found = Pushline.client.devices(**key)["devices"].first
    mine = found && found["user"] == user
    changes = { user: user, active: true }
    %i[name device_id].each { |k| changes[k] = fields[k] if fields.key?(k) || !mine }
    %i[p256dh auth].each { |k| changes[k] = fields[k] if fields.key?(k) }
    Pushline.client.update(**key, **changes)["device"]
  end
end
