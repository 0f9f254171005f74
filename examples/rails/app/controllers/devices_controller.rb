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
    reg = PUSHLINE.register(app: Rails.application.config.pushline_app, user: current_user.id, **fields)
    render json: { device: reg["device"], created: true }, status: :created
  rescue Pushline::DuplicateRegistration
    existing = PUSHLINE.devices(app: Rails.application.config.pushline_app, platform: fields[:platform],
                                registration_id: fields[:registration_id])["devices"].first
    render json: { device: existing, created: false }
  rescue Pushline::InvalidArgument => e
    render json: { error: e.error_message, field: e.field }, status: :unprocessable_entity
  rescue Pushline::ConnectionError
    render json: { error: "notifications are unavailable, try again later" }, status: :service_unavailable
  end

  def destroy
    # Only the user's own device.
    mine = PUSHLINE.devices(user: current_user.id, ids: [params[:id].to_i])["devices"]
    return head :not_found if mine.empty?

    PUSHLINE.unregister(device: mine.first["id"])
    head :no_content
  end
end
