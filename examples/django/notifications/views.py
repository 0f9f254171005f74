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

    The device is registered for the logged-in user. A token that is registered already
    belongs to whoever registered it last (the phone changed hands, or accounts): it is
    re-assigned to the caller and answered with 200. Another user's device data (name,
    user id) is never returned.
    """
    try:
        body = json.loads(request.body)
    except ValueError:
        return JsonResponse({"error": "body must be JSON"}, status=400)
    if not isinstance(body, dict):
        return JsonResponse({"error": "body must be a JSON object"}, status=400)
    fields = {k: body[k] for k in DEVICE_FIELDS if k in body}
    user = str(request.user.pk)
    pl = client()
    try:
        reg = pl.register(app=settings.PUSHLINE_APP, user=user, **fields)
    except pushline.DuplicateRegistration:
        try:
            device = reassign(pl, user, fields)
        except pushline.NotFound:  # unregistered in the meantime: register afresh
            reg = pl.register(app=settings.PUSHLINE_APP, user=user, **fields)
            return JsonResponse({"device": reg["device"], "created": True}, status=201)
        return JsonResponse({"device": device, "created": False})
    except pushline.InvalidArgument as e:
        return JsonResponse({"error": e.message, "field": e.field}, status=400)
    except pushline.ConnectionError:
        return JsonResponse({"error": "notifications are unavailable, try again later"}, status=503)
    return JsonResponse({"device": reg["device"], "created": True}, status=201)


def reassign(pl, user, fields):
    """Gives the registered token to `user`: their own device keeps what they did not
    resend; another user's device gets the caller's name and device id (or none), so
    nothing of the previous owner stays attached or is returned."""
    key = {"app": settings.PUSHLINE_APP, "platform": fields.get("platform"),
           "registration_id": fields.get("registration_id")}
    found = pl.devices(**key)["devices"]
    mine = bool(found) and found[0].get("user") == user
    changes = {"user": user, "active": True}
    for k in ("name", "device_id"):
        if k in fields or not mine:
            changes[k] = fields.get(k)
    for k in ("p256dh", "auth"):  # a WebPush subscription's keys (protocol 1.1)
        if k in fields:
            changes[k] = fields[k]
    return pl.update(**key, **changes)["device"]


@login_required
@require_POST
def ship_order(request, order_id):
    """Demo event: marks an order shipped and fires `order_shipped` (the handler pushes)."""
    responses = order_shipped.send(sender=None, user_id=request.user.pk, order_id=order_id)
    result = responses[0][1] if responses else None
    return JsonResponse({"order": order_id, "push": result})
