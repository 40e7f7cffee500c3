"""Regenerate the sample files (fixed seed): python data/make_samples.py

They live in the package, ``crmframes/samples/`` (one copy, read with ``crmframes.samples``),
so an installed wheel runs ``crmframes demo`` from any folder. Each file is small and
realistic and carries a few deliberately bad rows, marked below, so validation, rejection
and fixing can be shown end to end.
"""

from __future__ import annotations

import datetime as dt
import random
from pathlib import Path

import polars as pl

HERE = Path(__file__).resolve().parent.parent / "crmframes" / "samples"
FIRST = [
    "Anna",
    "Ben",
    "Chloé",
    "Dmitri",
    "Elif",
    "Farah",
    "Giulia",
    "Hiro",
    "Ines",
    "Jonas",
    "Kemal",
    "Léa",
    "Mehmet",
    "Nora",
    "Olu",
    "Priya",
    "Quinn",
    "Rosa",
    "Søren",
    "Zeynep",
]
LAST = [
    "Smith",
    "O'Brien",
    "Müller",
    "Yılmaz",
    "García",
    "Nguyen",
    "Kowalski",
    "Rossi",
    "Dubois",
    "Tanaka",
    "Öztürk",
    "Johnson",
    "Fernández",
    "Ivanova",
    "Larsen",
    "Khan",
]
CITIES = ["London", "Manchester", "Istanbul", "Berlin", "Paris", "Madrid", "Leeds", "Izmir"]
DOMAINS = ["example.com", "example.org", "mail.example.net"]


def _email(rng: random.Random, i: int, first: str, last: str) -> str:
    local = f"{first}.{last}".lower().replace("'", "").replace("é", "e").replace("ø", "o")
    local = local.replace("ü", "u").replace("ı", "i").replace("ö", "o")
    return f"{local}{i}@{rng.choice(DOMAINS)}"


def contacts(rng: random.Random, n: int = 200) -> pl.DataFrame:
    rows = []
    for i in range(n):
        f, last = rng.choice(FIRST), rng.choice(LAST)
        rows.append(
            {
                "email": _email(rng, i, f, last),
                "FIRSTNAME": f,
                "LASTNAME": last,
                "CITY": rng.choice(CITIES),
                "POSTCODE": f"{rng.randint(10, 99)} {rng.randint(1, 9)}AB",
                "LOYALTY_POINTS": rng.randint(0, 5000),
                "BIRTHDAY": dt.date(1950, 1, 1) + dt.timedelta(days=rng.randint(0, 20000)),
                "VIP": rng.random() < 0.1,
            }
        )
    rows[3]["CITY"] = 'Stratford-upon-Avon, "Warwickshire"'  # quotes and comma survive CSV
    rows[4]["LASTNAME"] = "Line\nBreak"  # an embedded newline
    rows[17]["email"] = "not-an-email"  # invalid
    rows[42]["email"] = None  # missing
    rows[77]["email"] = rows[10]["email"].upper()  # duplicate, in another case
    rows[150]["email"] = "suppressed.user@example.com"  # the sandbox seeds it as suppressed
    return pl.DataFrame(rows)


def orders(rng: random.Random, people: pl.DataFrame, n: int = 300) -> pl.DataFrame:
    emails = [e for e in people["email"].to_list() if e and "@" in e and e != "suppressed.user@example.com"]
    rows = []
    for i in range(n):
        items = [
            {"sku": f"SKU-{rng.randint(100, 999)}", "qty": rng.randint(1, 4), "price": round(rng.uniform(2, 120), 2)}
            for _ in range(rng.randint(1, 4))
        ]
        rows.append(
            {
                "order_id": f"ORD-{10000 + i}",
                "email": rng.choice(emails),
                "placed_at": dt.datetime(2026, 1, 1) + dt.timedelta(minutes=rng.randint(0, 400000)),
                "total": round(sum(x["qty"] * x["price"] for x in items), 2),
                "currency": rng.choice(["GBP", "EUR", "TRY"]),
                "channel": rng.choice(["web", "app", "store"]),
                "coupon": rng.choice([None, None, None, "WELCOME10", "SPRING"]),
                "items": items,
            }
        )
    rows[5]["email"] = "nobody.known@example.com"  # not a contact: the vendor rejects it
    rows[9]["order_id"] = rows[8]["order_id"]  # duplicate key
    rows[30]["total"] = float("nan")  # NaN is not JSON
    rows[31]["order_id"] = None
    return pl.DataFrame(rows)


def survey(rng: random.Random, people: pl.DataFrame, n: int = 120) -> pl.DataFrame:
    src = people.filter(pl.col("email").str.contains("@")).head(n)
    df = pl.DataFrame(
        {
            "firstName": src["FIRSTNAME"],
            "lastName": src["LASTNAME"],
            "email": src["email"],
            "language": [rng.choice(["EN", "TR", "DE"]) for _ in range(src.height)],
            "store": [rng.choice(CITIES) for _ in range(src.height)],
            "order_id": [f"ORD-{20000 + i}" for i in range(src.height)],
            "amount": [round(rng.uniform(5, 300), 2) for _ in range(src.height)],
            "visit_date": [dt.date(2026, 10, 1) + dt.timedelta(days=rng.randint(0, 40)) for _ in range(src.height)],
        }
    )
    return df.with_columns(
        pl.when(pl.int_range(pl.len()) == 7).then(pl.lit("broken@@example")).otherwise(pl.col("email")).alias("email"),
        pl.when(pl.int_range(pl.len()) == 12).then(None).otherwise(pl.col("store")).alias("store"),
    )


def dengage(rng: random.Random, people: pl.DataFrame) -> pl.DataFrame:
    src = people.filter(pl.col("email").str.contains("@"))
    df = pl.DataFrame(
        {
            "contact_key": [f"CK{100000 + i}" for i in range(src.height)],
            "email": src["email"].str.to_lowercase(),
            "name": src["FIRSTNAME"],
            "surname": src["LASTNAME"],
            "city": src["CITY"],
            "birth_date": src["BIRTHDAY"],
            "contact_status": [rng.choice(["A", "A", "A", "P"]) for _ in range(src.height)],
        }
    )
    return df.with_columns(
        pl.when(pl.int_range(pl.len()) == 3).then(None).otherwise(pl.col("contact_key")).alias("contact_key"),
        pl.when(pl.int_range(pl.len()) == 8)
        .then(pl.lit("X"))
        .otherwise(pl.col("contact_status"))
        .alias("contact_status"),
    )


def main() -> None:
    rng = random.Random(20261122)
    people = contacts(rng)
    people.write_csv(HERE / "contacts.csv")
    orders(rng, people).write_parquet(HERE / "orders.parquet")
    survey(rng, people).write_csv(HERE / "survey_transactions.csv")
    dengage(rng, people).write_csv(HERE / "dengage_contacts.csv")


if __name__ == "__main__":
    main()
