"""Read-only, customer-scoped SQL on the shop database (shared.support.shop)."""

from __future__ import annotations

import sqlite3

import pytest

from shared.chains import build_shop_db
from shared.support.shop import ShopDB, ShopError, open_shop


@pytest.fixture(scope="module")
def shop(tmp_path_factory) -> ShopDB:
    """A private copy of the shop database."""
    return open_shop(build_shop_db(tmp_path_factory.mktemp("shop") / "shop.db"))


def test_shop_queries_are_scoped_and_golden(shop) -> None:
    assert shop.customer(1)["email"] == "ava.thompson@example.com"
    assert shop.customer("1 OR 1=1") is None  # a parameter, never SQL
    assert shop.owns(1, 1047) and not shop.owns(4, 1047) and not shop.owns(None, 1047)
    assert [o["order_id"] for o in shop.orders(1)] == [1047, 1027, 1023, 1016]
    summary = shop.order_summary(9, 1048)
    assert "1048" in summary and "**processing**" in summary and "Next-day" in summary
    assert shop.order_summary(9, 1047) == "I can't find any orders in your account."
    # an order named by a product in it: singular or plural, newest first, own orders only
    assert shop.orders_naming(13, "ok whatever. is my lantern delivered?") == [1022]
    assert shop.orders_naming(5, "the camping stoves i sent back") == [1011]
    assert shop.orders_naming(20, "the order with the toaster and the duvets") == [1040]
    assert shop.orders_naming(6, "is my lantern delivered?") == []
    assert shop.orders_naming(None, "is my lantern delivered?") == []
    picks = shop.recommend(17)
    assert len(picks) == 3 and not {p["product_id"] for p in picks} & {
        row["product_id"]
        for row in shop.query(
            "SELECT i.product_id FROM orders o JOIN order_items i USING (order_id) "
            "WHERE o.customer_id = 17"
        )
    }


def test_shop_is_read_only(shop, tmp_path) -> None:
    with pytest.raises(sqlite3.OperationalError, match="readonly"):
        shop.query("UPDATE orders SET status = 'delivered'")
    with pytest.raises(ShopError, match="build_shop_db"):
        ShopDB(tmp_path / "missing.db")
