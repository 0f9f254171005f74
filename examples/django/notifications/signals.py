"""An application event: an order was shipped."""

from django.dispatch import Signal

#: Sent with `user_id` and `order_id` when an order leaves the warehouse.
order_shipped = Signal()
