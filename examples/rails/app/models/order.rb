# frozen_string_literal: true

# Sends "your order shipped" once the status change is committed.
class Order < ApplicationRecord
  belongs_to :user

  after_update_commit :notify_shipped, if: -> { saved_change_to_status?(to: "shipped") }

  private

  def notify_shipped
    NotifyOrderShippedJob.perform_later(id)
  end
end
