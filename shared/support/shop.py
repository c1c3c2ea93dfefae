"""Lesson 08 (customer-service capstone): account-aware answers from the shop's SQLite database.

The database is lesson 06's (:func:`shared.chains.build_shop_db`, built from ``data/shop/*.csv``).
The assistant opens it **read-only** (``mode=ro``: a write raises) and only runs fixed,
parameterised queries — the customer's words are never pasted into SQL, and every query is
scoped to the signed-in customer, so one customer can never read another's orders.
"""

from __future__ import annotations

import re
import sqlite3
from contextlib import closing
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from shared.support.dialog import PriceRequest

from shared.config import FriendlyError

__all__ = ["DELIVERY_TIMES", "ProductSearch", "ShopDB", "ShopError", "open_shop"]

#: delivery time after dispatch per shipping method, as the help centre states it.
DELIVERY_TIMES = {
    "standard": "Standard delivery takes 3-5 business days after dispatch",
    "express": "Express delivery takes 1-2 business days after dispatch",
    "next-day": "Next-day delivery arrives the next business day after dispatch",
    "international": "International delivery takes 7-14 business days after dispatch",
    "bulky": "For bulky items our two-person crew calls or texts you after dispatch to agree "
    "a two-hour delivery slot",
}
_STATUS = {
    "processing": "it has not left our warehouse yet, so you can still change the delivery "
    "address in your account",
    "shipped": "it is with the carrier; the tracking link is in your dispatch email",
    "delivered": "the carrier recorded it as delivered",
    "returned": "we received it back and the return has been processed",
    "cancelled": "it was cancelled, so nothing was shipped",
}


class ShopError(FriendlyError):
    """The shop database is missing or unreadable."""


class ShopDB:
    """Read-only, parameterised access to customers, orders and products."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise ShopError(
                f"The shop database {self.path} does not exist. Build it with "
                "shared.chains.build_shop_db() (lesson 06), or call open_shop()."
            )

    def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
        """Run one parameterised read query on a fresh read-only connection."""
        uri = f"file:{self.path}?mode=ro"
        with closing(sqlite3.connect(uri, uri=True, timeout=10)) as con:
            con.row_factory = sqlite3.Row
            return [dict(r) for r in con.execute(sql, params).fetchall()]

    def customer(self, customer_id: int | None) -> dict[str, Any] | None:
        """One customer's row, or None."""
        rows = self.query("SELECT * FROM customers WHERE customer_id = ?", (customer_id,))
        return rows[0] if rows else None

    def customers(self) -> list[tuple[str, int]]:
        """``(name, id)`` pairs for a sign-in picker."""
        rows = self.query("SELECT customer_id, name FROM customers ORDER BY customer_id")
        return [(f"{r['name']} (#{r['customer_id']})", r["customer_id"]) for r in rows]

    def owns(self, customer_id: int | None, order_id: int) -> bool:
        """Whether ``order_id`` belongs to ``customer_id`` (a guest owns nothing)."""
        if customer_id is None:
            return False
        rows = self.query(
            "SELECT 1 FROM orders WHERE order_id = ? AND customer_id = ?", (order_id, customer_id)
        )
        return bool(rows)

    def orders(self, customer_id: int) -> list[dict[str, Any]]:
        """The customer's orders, newest first, each with its items."""
        orders = self.query(
            "SELECT * FROM orders WHERE customer_id = ? ORDER BY order_date DESC, order_id DESC",
            (customer_id,),
        )
        for order in orders:
            order["items"] = self.query(
                "SELECT p.name, i.quantity FROM order_items i JOIN products p "
                "ON p.product_id = i.product_id WHERE i.order_id = ? ORDER BY p.name",
                (order["order_id"],),
            )
        return orders

    def orders_naming(self, customer_id: int | None, text: str) -> list[int]:
        """The customer's orders, newest first, with a product that ``text`` names by its kind
        ("did my lantern arrive?", "the order with the toaster and the duvets")."""
        if customer_id is None:
            return []
        words = set(re.findall(r"[a-z]+", text.lower()))
        words |= {w[: -len(end)] for w in words for end in ("s", "es") if w.endswith(end)}
        return [
            o["order_id"]
            for o in self.orders(customer_id)
            if any(_kind(i["name"], 1) in words for i in o["items"])
        ]

    def order_summary(self, customer_id: int | None, order_id: int | None = None) -> str:
        """A plain-language status of one of the customer's orders (default: the latest)."""
        if customer_id is None:
            return "Please sign in so that I can look up your orders."
        orders = self.orders(customer_id)
        if order_id is not None:
            orders = [o for o in orders if o["order_id"] == order_id]
        if not orders:
            return "I can't find any orders in your account."
        o = orders[0]
        items = ", ".join(f"{i['quantity']} x {i['name']}" for i in o["items"])
        status = _STATUS.get(o["status"], "see your account for details")
        text = f"Your order {o['order_id']} from {o['order_date']} ({items}) is "
        text += f"**{o['status']}**: {status}."
        if o["status"] in ("processing", "shipped"):
            text += f" {DELIVERY_TIMES.get(o['shipping_method'], '')}.".rstrip(" .") + "."
        return text

    def recommend(self, customer_id: int | None, n: int = 3) -> list[dict[str, Any]]:
        """In-stock products from the customer's categories, not bought yet, best sellers first.

        A guest (or a customer with no orders) gets the overall best sellers.
        """
        return self.query(
            """
            WITH mine AS (
                SELECT DISTINCT p.category, i.product_id FROM orders o
                JOIN order_items i ON i.order_id = o.order_id
                JOIN products p ON p.product_id = i.product_id
                WHERE o.customer_id = ? AND o.status != 'cancelled'),
            sold AS (SELECT product_id, SUM(quantity) AS n FROM order_items GROUP BY product_id)
            SELECT p.product_id, p.name, p.category, p.price FROM products p
            LEFT JOIN sold s ON s.product_id = p.product_id
            WHERE p.stock > 0 AND p.product_id NOT IN (SELECT product_id FROM mine)
            ORDER BY p.category IN (SELECT category FROM mine) DESC, COALESCE(s.n, 0) DESC,
                     p.product_id
            LIMIT ?""",
            (customer_id, n),
        )

    def recommend_text(self, customer_id: int | None, n: int = 3) -> str:
        """Recommendations from the customer's history as a short message."""
        picks = self.recommend(customer_id, n)
        lines = "\n".join(f"- {p['name']} (${p['price']:.2f}, {p['category']})" for p in picks)
        basis = "what you bought before" if customer_id is not None else "our best sellers"
        return f"Based on {basis}, I'd recommend:\n{lines}"

    def products(self) -> list[dict[str, Any]]:
        """The catalogue, in product id order."""
        return self.query("SELECT * FROM products ORDER BY product_id")


def _kind(name: str, plain: int = 0) -> str:
    """A name's last word, sizes and notes left out ("Mill Forge Dutch Oven 5 L" -> "oven");
    with ``plain``, the word before a set's or a trio's ("Riverton Knife Set" -> "knife")."""
    words = [w for w in re.findall(r"[A-Za-z]+", re.sub(r"\(.*?\)", "", name)) if len(w) > 2]
    if plain and len(words) > 1 and words[-1] in ("Set", "Trio"):
        words.pop()
    return words[-1].lower() if words else ""


class ProductSearch:
    """Products that fit a request ("something to light up my desk"): MiniLM over the catalogue.

    Each product is embedded as "name (category): description"; :meth:`search` returns the
    in-stock products whose similarity is within ``margin`` of the best, when the best reaches
    ``min_similarity`` (otherwise nothing: the shop has no such product).
    """

    def __init__(
        self,
        shop: ShopDB,
        embed: Any,
        min_similarity: float = 0.45,
        margin: float = 0.08,
        query_vector: Any = None,
    ) -> None:
        self.items = [p for p in shop.products() if p["stock"] > 0]
        self.embed, self.min_similarity, self.margin = embed, min_similarity, margin
        self.query_vector = query_vector or (lambda text: embed([text])[0])
        texts = [f"{p['name']} ({p['category']}): {p['description']}" for p in self.items]
        self.matrix = embed(texts)  # (P, D), unit rows
        #: the kinds of product sold ("kettle", "lamp"): the last word of each product's name
        kinds = {_kind(p["name"]) for p in self.items} - {"", "set", "trio", "card", "throw", "bag"}
        self._kinds = re.compile(rf"\b({'|'.join(sorted(kinds))})(e?s)?\b", re.I)

    def generic(self, text: str) -> str:
        """``text`` with the kinds of product it names replaced by "item" ("how do I return the
        kettle?" -> "how do I return the item?"): the help centre's rules are the same for every
        product, and a product's name pulls a sentence embedding away from them."""
        return self._kinds.sub("item", text)

    def scores(self, request: str) -> list[tuple[float, dict[str, Any]]]:
        """``(cosine, product)`` for every in-stock product, best first."""
        sims = self.matrix @ self.query_vector(request)  # (P,)
        return sorted(zip(sims.tolist(), self.items, strict=True), key=lambda t: -t[0])

    def search(
        self,
        request: str,
        n: int = 3,
        min_similarity: float | None = None,
        price: PriceRequest | None = None,
    ) -> list[dict[str, Any]]:
        """Up to ``n`` products that fit ``request``, best first (empty when none fits).

        ``price`` (a :class:`~shared.support.dialog.PriceRequest`) keeps the products within its
        limits and, with an order, returns the fitting products cheapest (or dearest) first.
        """
        ranked = self.scores(price.rest if price is not None else request)
        if price is not None:
            ranked = [
                (s, p)
                for s, p in ranked
                if (price.most is None or p["price"] <= price.most)
                and (price.least is None or p["price"] >= price.least)
            ]
        floor = self.min_similarity if min_similarity is None else min_similarity
        if price is not None and price.order and price.any_product:
            ranked = [(floor, p) for _, p in ranked]  # "the cheapest thing you sell": all of them
        elif price is not None and price.open:
            floor = -1.0  # "something under $50 for her flat": the closest within the budget
        if not ranked or ranked[0][0] < floor:
            return []
        if price is not None and price.order:  # "the cheapest lamp": the lamps, by price
            fits = [p for s, p in ranked if s >= ranked[0][0] - self.margin]
            return sorted(fits, key=lambda p: p["price"], reverse=price.order == "high")[:n]
        return [p for s, p in ranked[:n] if s >= ranked[0][0] - self.margin]

    @staticmethod
    def text(picks: list[dict[str, Any]]) -> str:
        """The picks as a short message with prices and descriptions."""
        lines = "\n".join(f"- {p['name']} (${p['price']:.2f}): {p['description']}" for p in picks)
        return f"From our catalogue, these fit what you describe:\n{lines}"


def open_shop(path: str | Path | None = None) -> ShopDB:
    """The shop database (built by lesson 06's ``build_shop_db`` when no path is given)."""
    if path is None:
        from shared.chains import build_shop_db

        path = build_shop_db()
    return ShopDB(path)
