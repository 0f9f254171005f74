"""Registers the caller's device, and a demo event that sends a notification."""

import json

import pushline
from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.http import JsonResponse
from django.views.decorators.http import require_POST

from .push import client
from .signals import order_shipped

# The device fields a browser or mobile app may send (protocol.md `register`).
DEVICE_FIELDS = ("platform", "registration_id", "name", "device_id", "p256dh", "auth", "browser")


@login_required
@require_POST
def register_device(request):
    """POST JSON {"platform": "fcm", "registration_id": "...", "name": "Ann's Pixel"}.

    The device is registered for the logged-in user. Registering the same token again
    answers 200 with the existing device (like django-push-notifications' view).
    """
    try:
        body = json.loads(request.body)
    except ValueError:
        return JsonResponse({"error": "body must be JSON"}, status=400)
    if not isinstance(body, dict):
        return JsonResponse({"error": "body must be a JSON object"}, status=400)
    fields = {k: body[k] for k in DEVICE_FIELDS if k in body}
    pl = client()
    try:
        reg = pl.register(app=settings.PUSHLINE_APP, user=str(request.user.pk), **fields)
    except pushline.DuplicateRegistration:
        found = pl.devices(app=settings.PUSHLINE_APP, platform=fields.get("platform"),
                           registration_id=fields.get("registration_id"))["devices"]
        return JsonResponse({"device": found[0] if found else None, "created": False})
    except pushline.InvalidArgument as e:
        return JsonResponse({"error": e.message, "field": e.field}, status=400)
    except pushline.ConnectionError:
        return JsonResponse({"error": "notifications are unavailable, try again later"}, status=503)
    return JsonResponse({"device": reg["device"], "created": True}, status=201)


@login_required
@require_POST
def ship_order(request, order_id):
    """Demo event: marks an order shipped and fires `order_shipped` (the handler pushes)."""
    responses = order_shipped.send(sender=None, user_id=request.user.pk, order_id=order_id)
    result = responses[0][1] if responses else None
    return JsonResponse({"order": order_id, "push": result})
