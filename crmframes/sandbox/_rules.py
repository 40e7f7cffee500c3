"""Every sandbox choice that the vendors do not document, in one place ([I] in CONTRACTS.md).

Change a line here when a real answer is learned: the sandbox reads every limit and [I]
choice from here (the vendor modules keep only the documented words and shapes).
"""

from __future__ import annotations

# --- Dotdigital ---------------------------------------------------------------------
DD_MAX_BODY = 50_000_000  # "50 MB" per request/file; decimal reading
DD_OVERSIZE_STATUS = 413  # [I] status for a body over 50 MB (code not documented)
DD_TOO_MANY_CONTACT_IMPORTS_STATUS = 400  # [I] message ...ERROR_IMPORT_TOOMANYACTIVEIMPORTS
DD_MAX_ACTIVE_CONTACT_IMPORTS = 25
DD_TOO_MANY_INSIGHT_IMPORTS_STATUS = 429  # [I] by analogy with v3 contacts:tooManyActiveImports
DD_MAX_ACTIVE_INSIGHT_IMPORTS = 5
DD_UNKNOWN_IMPORT_STATUS = 404  # [I] ERROR_IMPORT_NOT_FOUND
DD_UNKNOWN_ADDRESS_BOOKS = frozenset({404, 999_999})  # [I] seeded: these ids do not exist
# Seeded contacts whose status makes an import fault (report-faults Reason texts, DD-WEB)
DD_SEEDED_FAULTS = {
    "suppressed.user@example.com": "Globally Suppressed",
    "unsubscribed.user@example.com": "Unsubscribed",
    "bounced.user@example.com": "Hard bounced",
}
# the contact data fields every account starts with (CONTRACTS §6), all String [I]
DD_DEFAULT_FIELDS = {
    "FIRSTNAME": "String",
    "LASTNAME": "String",
    "FULLNAME": "String",
    "GENDER": "String",
    "POSTCODE": "String",
}
DD_ACCOUNT_ID = 1001  # [I] the sandbox account's id in /v2/account-info
DD_RATE_LIMIT_SCOPE = "lowCallRate"  # [S] tier name for bulk calls
DD_RATE_LIMIT = 150  # [S] docs example for lowCallRate
DD_MAX_KEY_CHARS = 255  # [I] a record key longer than this is InvalidClientKey (as collection names)
DD_MAX_NAME_CHARS = 255  # a collection name's length (the v3 spec's maxLength)
DD_PAGE = 1000  # [I] ``select`` when a v2 listing is asked without one (the swagger gives no figure)

# --- every vendor ---------------------------------------------------------------------
SMALL_BODY = 1_000_000  # [I] bytes accepted by calls that carry no import (login, data fields)
RETRY_AFTER = (1, 3)  # [I] seconds a 429 drawn by the p429 knob asks to wait (Retry-After)

# --- Qualtrics ----------------------------------------------------------------------
QX_MAX_BODY = 5_000_000  # "5 MB"
QX_MAX_CONTACTS = 10_000
QX_OVERSIZE_STATUS = 413  # [I] status for either limit (not documented)
QX_STATES = ("inProgress", "complete", "failed")  # [I] mirrors response-export job states
QX_REPORT_PAGE = 100  # [I] import report entries per page (skipToken paging)
QX_UNKNOWN_IDS = ("UNKNOWN",)  # [I] ids containing this behave as deleted: job ends with 0 counts
QX_NULLS_UNPROCESSED = True  # [I] a contact with a null value lands in contacts.unprocessed

# --- D·engage -----------------------------------------------------------------------
DN_MAX_RECORDS = 1000
DN_INTERVAL = 60.0  # seconds between bulk calls (scaled by time_scale)
DN_TOKEN_TTL = 3600  # expires_in of /rest/login
DN_COLUMNS = frozenset(
    {  # import template columns [S DN-PS] + city; others fail the record
        "contact_key",
        "contact_status",
        "email",
        "email_permission",
        "email_status",
        "gsm",
        "gsm_permission",
        "gsm_status",
        "name",
        "surname",
        "gender",
        "birth_date",
        "segment",
        "source",
        "subscription_date",
        "rfm_score",
        "rfm_segment",
        "rfm_mobile_score",
        "rfm_mobile_segment",
        "gsm_source",
        "email_source",
        "gsm_consent_date",
        "email_consent_date",
        "contact_type",
        "city",
    }
)
DN_MAX_CHARS = {"email": 255, "gsm": 20, "name": 100, "surname": 100, "gender": 100}  # seed §5
DN_DATE_COLUMNS = ("birth_date",)  # "date string, length <= 10" (seed §5)
DN_DATE_CHARS = 10
DN_CODES = {"FieldError": 1, "Forbidden": 10, "ValidationFails": 11, "UnexpectedError": 999}
DN_TOO_MANY_CODE = 429  # [I] code in the body of a 429
# [I] API users whose key starts with this lack DataSpace.Manage: bulk calls get 403 with an
# empty body, as observed live (DN-PS)
DN_NO_PERMISSION_PREFIX = "readonly"
