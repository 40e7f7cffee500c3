"""Write the replay cassettes from the vendors' documented example responses.

Every response body below is a vendor's documented example (the source is named next to
it, see shared/vendors/CONTRACTS.md); where a vendor documents only a shape, the values
are marked [I] (illustrative). Run ``python tests/cassettes/build.py`` after editing.
Re-recording against real accounts (``CRMFRAMES_RECORD_CASSETTES=1`` plus credentials)
overwrites these files with real answers, auth headers and tokens filtered out.
"""

from __future__ import annotations

import json
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
DD = "https://r1-api.dotdigital.com"
QX = "https://fra1.qualtrics.com"
DN = "https://eu-api.dengage.com"

# Dotdigital contacts import: DD-AB (202 example id), DD-EC (status, report, faults CSV)
CONTACT_IMPORT = "af4ac4bc-e1e7-4817-8a66-73fb59e91ce6"
CONTACT_REPORT = {
    "newContacts": 10,
    "updatedContacts": 14,
    "globallySuppressed": 5,
    "invalidEntries": 7,
    "duplicateEmails": 3,
    "blocked": 1,
    "unsubscribed": 13,
    "hardBounced": 6,
    "softBounced": 12,
    "ispComplaints": 8,
    "mailBlocked": 9,
    "domainSuppressed": 2,
    "pendingDoubleOptin": 11,
    "failures": 4,
    "suppressedContacts": 15,
}
CONTACT_FAULTS = (
    "Reason,email,firstname,fullname,gender,lastname,postcode\n"
    "Unsubscribed,karina.plain@example.com,Karina,Karina Plain,Female,Plain,123456\n"
    "Duplicate,demo@apiconnector.com,Demo,Demo,Male,Demo,123456"
)

# Dotdigital v2 transactional data: DD-TD (202, status, report; the report example is
# malformed JSON, mended into the DD-SW object shape as CONTRACTS §1 says)
TD_IMPORT = "842d81e8-c619-457f-bb77-ab6c4a17da39"
TD_REPORT = {
    "totalItems": 6,
    "totalImported": 5,
    "totalRejected": 1,
    "faults": [{"key": "1234AB", "reason": "InvalidJson"}],
}

# Dotdigital v3 Insight data: DD-ID ("Import complete" example)
INSIGHT_IMPORT = "d7de900d-d337-43f6-b1e1-c8ec73e1a434"
INSIGHT_DONE = {
    "importId": INSIGHT_IMPORT,
    "status": "Finished",
    "collectionName": "Orders",
    "summary": {"totalRecords": 10, "totalImported": 9, "totalRejected": 1},
    "failures": [
        {
            "collectionOwner": {
                "ownerType": "contact",
                "contactIdentity": {"identifier": "email", "value": "joe.bloggs@emailsim.io"},
            },
            "failureReason": "Unknown",
            "details": ["Field 'name' is required but was missing", "Field 'price' is expected to be a number"],
            "key": "24938",
            "json": {"PurchaseDate": "2020-01-01T09:40:18.527Z", "TotalExTax": 56, "TotalIncTax": 67.2},
        }
    ],
}

# Qualtrics: shapes from QX-QD (create batch, create import, status, summary); ids and
# counts are [I] illustrative, Qualtrics publishes no literal example values here.
QX_DIR, QX_LIST, QX_BATCH, QX_IMPORT = "POOL_012345678901234", "CG_012345678901234", "BT_0123456789", "PGR_0123456789"
QX_PATH = f"/API/v3/directories/{QX_DIR}/mailinglists/{QX_LIST}/transactioncontacts"
META = {"httpStatus": "200 - OK", "requestId": "7b1a4a4e-0000-4000-8000-000000000000"}
QX_COUNTS = {"contacts": {"count": {"added": 3, "updated": 0, "failed": 1}}, "transactions": {"count": {"created": 3}}}

# D·engage: login and bulk answers as D·engage's pre-sales code reads them (DN-PS); the
# element values are [I] illustrative ("<contact_key>: <problem>" for errors).
DN_LOGIN = {"access_token": "REDACTED", "token_type": "Bearer", "expires_in": 3600}
DN_BULK = {
    "code": 0,
    "message": "Success",
    "data": {"inserted": ["c1", "c2"], "updated": ["c3"], "errors": ["c4: email is not valid."], "warnings": []},
}


# Account metadata the preflight reads. DD-AB's example address book (its id made the one the
# test sends to); the swagger's ApiDataField shape with the default fields every account
# starts with (CONTRACTS §6; types [I]); DD-TD's example collection list (PascalCase, mended
# into JSON); DD-ID's collectionSummary with its own example values; Qualtrics' mailing list
# shape (QX-QD get-mailing-list; values [I]).
ADDRESS_BOOK = {"id": 123, "name": "Address book 2", "visibility": "Private", "contacts": 5}
DATA_FIELDS = [
    {"name": n, "type": "String", "visibility": "Private", "defaultValue": None}
    for n in ("FIRSTNAME", "LASTNAME", "FULLNAME", "GENDER", "POSTCODE")
]
TD_COLLECTIONS = [
    {"Id": 1, "Name": "Catalog"},
    {"Id": 2, "Name": "Orders"},
    {"Id": 3, "Name": "ProductRecommendations"},
    {"Id": 4, "Name": "ProductRecommendations_2"},
]
INSIGHT_COLLECTIONS = [
    {"collectionName": "Orders", "collectionType": "orders", "collectionScope": "contact", "recordCount": 100}
]
QX_LIST_ANSWER = {"mailingListId": QX_LIST, "name": "Transactions", "ownerId": "UR_0123456789", "contactCount": 0}


def answer(method: str, url: str, status: int, body: object, content_type: str = "application/json") -> dict:
    text = body if isinstance(body, str) else json.dumps(body)
    return {
        "request": {"method": method, "uri": url, "body": None, "headers": {}},
        "response": {
            "status": {"code": status, "message": {200: "OK", 202: "Accepted"}[status]},
            "headers": {"Content-Type": [content_type]},
            "body": {"string": text},
        },
    }


CASSETTES = {
    "dotdigital_contacts": [
        answer("GET", f"{DD}/v2/address-books/123", 200, ADDRESS_BOOK),
        answer("GET", f"{DD}/v2/data-fields", 200, DATA_FIELDS),
        answer(
            "POST",
            f"{DD}/v2/address-books/123/contacts/import/with-merge-option/OnlyOverwriteIfNotEmpty",
            202,
            {"id": CONTACT_IMPORT, "status": "NotFinished"},
        ),
        answer("GET", f"{DD}/v2/contacts/import/{CONTACT_IMPORT}", 200, {"id": CONTACT_IMPORT, "status": "Finished"}),
        answer("GET", f"{DD}/v2/contacts/import/{CONTACT_IMPORT}/report", 200, CONTACT_REPORT),
        answer(
            "GET",
            f"{DD}/v2/contacts/import/{CONTACT_IMPORT}/report-faults",
            200,
            CONTACT_FAULTS,
            "application/octet-stream",
        ),
    ],
    "dotdigital_transactional_data": [
        answer("GET", f"{DD}/v2/contacts/transactional-data-collections?select=1000&skip=0", 200, TD_COLLECTIONS),
        answer(
            "POST", f"{DD}/v2/contacts/transactional-data/import/orders", 202, {"id": TD_IMPORT, "status": "NotStarted"}
        ),
        answer(
            "GET",
            f"{DD}/v2/contacts/transactional-data/import/{TD_IMPORT}",
            200,
            {"id": TD_IMPORT, "status": "Finished"},
        ),
        answer("GET", f"{DD}/v2/contacts/transactional-data/import/{TD_IMPORT}/report", 200, TD_REPORT),
    ],
    "dotdigital_insight_data": [
        answer("GET", f"{DD}/insightData/v3/collections", 200, INSIGHT_COLLECTIONS),
        answer("PUT", f"{DD}/insightData/v3/import", 202, {"importId": INSIGHT_IMPORT}),
        answer("GET", f"{DD}/insightData/v3/import/{INSIGHT_IMPORT}", 200, INSIGHT_DONE),
    ],
    "qualtrics_transaction_contacts": [
        answer(
            "GET",
            f"{QX}/API/v3/directories/{QX_DIR}/mailinglists/{QX_LIST}",
            200,
            {"result": QX_LIST_ANSWER, "meta": META},
        ),
        answer(
            "POST",
            f"{QX}/API/v3/directories/{QX_DIR}/transactionbatches",
            200,
            {"result": {"id": QX_BATCH}, "meta": META},
        ),
        answer(
            "POST",
            f"{QX}{QX_PATH}",
            200,
            {
                "result": {
                    "id": QX_IMPORT,
                    "contacts": {"unprocessed": [4]},
                    "tracking": {"url": f"{QX}{QX_PATH}/{QX_IMPORT}"},
                    "status": "inProgress",
                },
                "meta": META,
            },
        ),
        answer(
            "GET",
            f"{QX}{QX_PATH}/{QX_IMPORT}",
            200,
            {"result": {"percentComplete": 100.0, "status": "complete", **QX_COUNTS}, "meta": META},
        ),
        answer(
            "GET",
            f"{QX}{QX_PATH}/{QX_IMPORT}/summary",
            200,
            {
                "result": {
                    "percentComplete": 100.0,
                    "status": "complete",
                    **QX_COUNTS,
                    # [I] an address our syntax check passes but Qualtrics rejects
                    "invalidEmails": ["Old.Address@example.com"],
                },
                "meta": META,
            },
        ),
    ],
    "dengage_contacts": [
        answer("POST", f"{DN}/rest/login", 200, DN_LOGIN),
        answer("POST", f"{DN}/rest/bulk/contacts", 200, DN_BULK),
    ],
}


def main() -> None:
    for name, interactions in CASSETTES.items():
        path = HERE / f"{name}.yaml"
        path.write_text(
            yaml.safe_dump({"interactions": interactions, "version": 1}, sort_keys=False, allow_unicode=True, width=120)
        )
        print(f"wrote {path.relative_to(HERE.parent.parent)}")


if __name__ == "__main__":
    main()
