"""Sends a push notification when an order ships."""

import logging

import pushline
from django.conf import settings
from django.dispatch import receiver

from .push import client
from .signals import order_shipped

log = logging.getLogger(__name__)


@receiver(order_shipped)
def notify_order_shipped(sender, user_id, order_id, **kwargs):
    try:
        result = client().send(
            users=[str(user_id)],
            app=settings.PUSHLINE_APP,
            title="Good news",
            message=f"Order #{order_id} has shipped",
            badge=1,
            extra={"order": order_id},
            collapse_id=f"order-{order_id}",
        )
    except pushline.ProviderNotConfigured as e:
        log.warning("push not configured for %s/%s: %s", e.app, e.platform, e.message)
        return None
    except pushline.PushlineError as e:
        # The order shipped anyway: a push failure must not break the request.
        log.error("push for order %s failed: %s", order_id, e)
        return None
    for r in result["results"]:
        if r["status"] == "failed":
            # Dead tokens are already deactivated by the daemon (r["deactivated"]).
            log.info("device %s: %s", r["id"], r["reason"])
    return result
