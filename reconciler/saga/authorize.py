"""payment.authorize: the provider first, so a run after a crash gets the first answer again."""

from __future__ import annotations

from flashsale.reconciler.saga.compensation import give_back, kept_out, void
from flashsale.reconciler.saga.parties import Parties, both
from flashsale.store.saga.model import Decision, Order


async def authorize(p: Parties, o: Order) -> Decision:
    # Same key, same answer: a decline given back in Redis before a crash still ends as
    # PAYMENT_FAILED when the step runs again.
    answer = await p.payment.authorize(
        o.key(), o.order_id, o.customer_id, o.total_minor, o.payment_ref
    )
    if answer.ok:
        hold = await p.engine.get_hold(o.sale_id, o.order_id)
        if hold is not None and hold.status == "compensated":
            # The units were given back outside the saga: nothing left to charge for.
            await void(p, o, answer.ref)
            return Decision(
                "voided",
                "CANCELLED",
                "units were given back before payment; authorisation voided",
                history=[("payment.void", "voided")],
                notices=both("order.cancelled", refunded_minor=0),
            )
        return Decision(
            "authorized",
            "AUTHORIZED",
            f"payment authorized ({answer.ref})",
            "supplier.allocate",
            order={"authorization_id": answer.ref, "authorized_minor": o.total_minor},
        )
    why = f"payment declined: {answer.detail or answer.code}"
    # A cancel recorded while PENDING gave its units back already: those stay out.
    returned = await give_back(p, o, why, kept_out(o))
    return Decision(
        "declined",
        "PAYMENT_FAILED",
        why,
        history=[("stock.release", returned)],
        notices=both("order.payment_failed", reason=answer.detail or answer.code),
    )
