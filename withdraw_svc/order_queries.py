"""A user's orders, read: one order, and their list page by page."""

from __future__ import annotations

from datetime import datetime

from meshkit import paging
from meshkit.errors import NotFound
from withdraw_svc.domain import MAX_ORDER_ID_LEN, Order, validate_order_id, validate_uid
from withdraw_svc.ports import OrderReads


def encode_page_token(order: Order) -> str:
    return paging.keyset_token(order.created_at, order.order_id)


def decode_page_token(token: str) -> tuple[datetime, str] | None:
    return paging.keyset_of(token, key_max_len=MAX_ORDER_ID_LEN)


class OrderQueries:
    def __init__(self, orders: OrderReads) -> None:
        self.orders = orders

    async def get_order(self, order_id: str, owner: int | None) -> Order:
        """The order, if `owner` owns it (None: any owner, for services). Someone else's
        order is not found, word for word like a missing one, so ids cannot be probed."""
        validate_order_id(order_id)
        order = await self.orders.get_order(order_id, with_history=True)
        if order is None or (owner is not None and order.uid != owner):
            raise NotFound(f"order_id {order_id!r} not found", reason="ORDER_NOT_FOUND")
        return order

    async def list_orders(self, uid: int, page_size: int, page_token: str) -> tuple[list[Order], str]:
        validate_uid(uid)
        size = paging.PERSON_LIST.of(page_size)
        after = decode_page_token(page_token)
        orders = await self.orders.list_orders(uid, size + 1, after)
        if len(orders) > size:
            return orders[:size], encode_page_token(orders[size - 1])
        return orders, ""
