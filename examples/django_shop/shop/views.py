"""POST /orders: place an order and send ``order_placed``, in one database transaction.

Body: ``{"phone": "+91...", "total": "499.00", "currency": "INR", "delivery": "outbox"}``.
``delivery`` is ``outbox`` (the default: the event is a row of this transaction, relayed by
``manage.py limechat_outbox_relay``) or ``on_commit`` (enqueued when the transaction commits).
``"card": "declined"`` makes the payment fail after the order and its event are written: the
transaction rolls back and no event is sent.
"""

from __future__ import annotations

import json
from decimal import Decimal, InvalidOperation

from django.db import transaction
from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from producer import ValidationError
from producer.django import send_event_on_commit, send_event_via_outbox

from .models import Order

SENDERS = {"outbox": send_event_via_outbox, "on_commit": send_event_on_commit}


class PaymentDeclined(Exception):
    pass


@csrf_exempt
@require_POST
def place_order(request: HttpRequest) -> JsonResponse:
    try:
        body = json.loads(request.body)
        send = SENDERS[body.get("delivery", "outbox")]
        total = Decimal(str(body["total"]))
    except (ValueError, KeyError, TypeError, InvalidOperation):
        return JsonResponse({"error": "bad request"}, status=400)
    try:
        with transaction.atomic():
            order = Order.objects.create(
                phone=body.get("phone", ""), total=total, currency=body.get("currency", "INR")
            )
            event_id = send(
                "order_placed",
                phone=order.phone,
                data={"order_id": str(order.pk), "total": str(total), "currency": order.currency},
            )
            if body.get("card") == "declined":
                raise PaymentDeclined  # rolls back the order and its event
    except ValidationError as exc:
        return JsonResponse({"error": str(exc), "field": exc.field}, status=400)
    except PaymentDeclined:
        return JsonResponse({"error": "payment declined"}, status=402)
    return JsonResponse({"order_id": order.pk, "event_id": event_id}, status=201)


def health(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"status": "ok"})
