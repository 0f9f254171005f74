# frozen_string_literal: true

# Pushes "Order #N has shipped" to every active device of the order's user.
class NotifyOrderShippedJob < ApplicationJob
  queue_as :default

  # The daemon was overloaded or restarting: nothing was sent, so retrying is safe.
  retry_on Pushline::Busy, Pushline::ShuttingDown, wait: 5.seconds, attempts: 5

  def perform(order_id)
    order = Order.find(order_id)
    result = PUSHLINE.send_message(
      users: [order.user_id],
      app: Rails.application.config.pushline_app,
      title: "Good news",
      message: "Order ##{order.id} has shipped",
      badge: 1,
      extra: { order: order.id },
      collapse_id: "order-#{order.id}"
    )
    result["results"].select { |r| r["status"] == "failed" }.each do |r|
      # Dead tokens were already deactivated by the daemon (r["deactivated"]).
      Rails.logger.info("push to device #{r['id']} failed: #{r['reason']}")
    end
  rescue Pushline::ProviderNotConfigured => e
    Rails.logger.warn("push not configured for #{e.app}/#{e.platform}")
  end
end
