# frozen_string_literal: true

# Pushes "Order #N has shipped" to every active device of the order's user.
class NotifyOrderShippedJob < ApplicationJob
  queue_as :default

  # The daemon was overloaded or restarting: nothing was sent, so retrying is safe.
  retry_on Pushline::Busy, Pushline::ShuttingDown, wait: 5.seconds, attempts: 5

  def perform(order_id)
    order = Order.find(order_id)
    result = Pushline.client.send_message(
      users: [order.user_id],
      app: Pushline.configuration.app,
      title: "Good news",
      message: "Order ##{order.id} has shipped",
      badge: 1,
      extra: { order: order.id },
      collapse_id: "order-#{order.id}"
    )
    result.failures.each do |r|
      # Dead tokens were already deactivated by the daemon (r.deactivated?).
      Rails.logger.info("push to device #{r.id} failed: #{r.reason} (#{r.reason_class})")
    end
  rescue Pushline::ProviderNotConfigured => e
    Rails.logger.warn("push not configured for #{e.app}/#{e.platform}")
  end
end
